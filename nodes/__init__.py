"""Node families of the pack, one file each; ``comfy_entrypoint`` hands them to ComfyUI."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .audio import SayAnythingFitAudioToVideo, SayAnythingLoadAudio
from .face import SayAnythingFaceCrop, SayAnythingFaceMask, SayAnythingFacePaste
from .face_track_file import SayAnythingLoadFaceTrack
from .model import SayAnythingModelLoader, SayAnythingReferenceEncode
from .model_folders import register_model_folders
from .motion import (
    SayAnythingMouthMotionEdit,
    SayAnythingMouthMotionFromAudio,
    SayAnythingMouthMotionFromVideo,
    SayAnythingMouthMotionPreview,
)
from .sampler import SayAnythingSampler
from .style import SayAnythingStyleReference
from .video import SayAnythingLipSyncVideo
from .whisper import SayAnythingWhisperFeatures, SayAnythingWhisperLoader

NODES: list[type[io.ComfyNode]] = [
    SayAnythingLoadAudio,
    SayAnythingFitAudioToVideo,
    SayAnythingWhisperLoader,
    SayAnythingWhisperFeatures,
    SayAnythingFaceMask,
    SayAnythingLoadFaceTrack,
    SayAnythingFaceCrop,
    SayAnythingFacePaste,
    SayAnythingModelLoader,
    SayAnythingReferenceEncode,
    SayAnythingSampler,
    SayAnythingLipSyncVideo,
    SayAnythingMouthMotionFromAudio,
    SayAnythingMouthMotionFromVideo,
    SayAnythingMouthMotionEdit,
    SayAnythingMouthMotionPreview,
    SayAnythingStyleReference,
]


class SayAnythingExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI 0.3.75 does not call on_load; the folders must exist before the schemas list them.
        register_model_folders()
        return NODES


async def comfy_entrypoint() -> SayAnythingExtension:
    return SayAnythingExtension()
