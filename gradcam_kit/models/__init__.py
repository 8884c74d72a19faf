"""The model this project ships: :class:`~gradcam_kit.models.resnet50.ResNet50FineTuned`,
its checkpoints, and the builder shared by the commands.
"""


def __getattr__(name: str) -> object:  # the names of gradcam_kit 0.1's models module
    from .._legacy import former_attribute

    return former_attribute(__name__, name)
