"""SayAnything networks (diffusers-based; imported lazily by the nodes)."""

from .torchvision_compat import make_torchvision_importable

make_torchvision_importable()

from .audio_projection import AudioProjection
from .id_guider import IDGuider
from .model import Conditioning, SayAnythingModel, edm_scalings, make_added_time_ids
from .unet import SayAnythingUNet

__all__ = [
    "AudioProjection",
    "Conditioning",
    "IDGuider",
    "SayAnythingModel",
    "SayAnythingUNet",
    "edm_scalings",
    "make_added_time_ids",
]
