"""Classification metrics, the pointing game (localisation) and faithfulness metrics."""


def __getattr__(name: str) -> object:  # the names of gradcam_kit 0.1's metrics module
    from .._legacy import former_attribute

    return former_attribute(__name__, name)
