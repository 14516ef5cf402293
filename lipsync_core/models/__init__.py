"""SayAnything networks (diffusers-based; imported lazily by the nodes)."""

from ..compat import make_torchvision_importable

make_torchvision_importable()  # must run before diffusers is imported below

from .audio_projection import AudioProjection  # noqa: E402
from .id_guider import IDGuider  # noqa: E402
from .model import Conditioning, SayAnythingModel, add_motion_input, edm_scalings, make_added_time_ids  # noqa: E402
from .unet import DeepFeatureCache, SayAnythingUNet  # noqa: E402

__all__ = [
    "AudioProjection",
    "Conditioning",
    "DeepFeatureCache",
    "IDGuider",
    "SayAnythingModel",
    "SayAnythingUNet",
    "add_motion_input",
    "edm_scalings",
    "make_added_time_ids",
]
