"""Reading images (8/16-bit PNG, JPEG), preprocessing, datasets and synthetic chest X-rays."""


def __getattr__(name: str) -> object:  # the names of gradcam_kit 0.1's data module
    from .._legacy import former_attribute

    return former_attribute(__name__, name)
