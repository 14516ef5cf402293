"""The SayAnything sampler node: masked-video diffusion over the face crops, with progress and Cancel."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

from .types import (
    IdFeatures,
    MouthMotion,
    SayAnythingModel,
    WhisperFeatures,
    check_frames,
    fps_input,
    motion_guidance_input,
    node_schema,
    sampler_options,
    sampling_inputs,
    speed_inputs,
    style_inputs,
)

PREVIEW_SIZE = 512  # longest side of the sampling preview ComfyUI shows on the node


def preview_image(image):
    """IMAGE ``[1, S, S, 3]`` -> the PIL image ComfyUI's progress hook sends as the node's preview."""
    from PIL import Image

    return Image.fromarray((image[0].clamp(0, 1) * 255).round().byte().cpu().numpy())


class SayAnythingSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="SayAnythingSampler",
            display_name="SayAnything Sampler",
            description="Regenerates the masked mouth region of the face crops so the lips follow the audio "
            "(EDM Euler, separate reference and audio guidance, overlapping windows blended every step). Connect "
            "crops and crop_mask from SayAnything Face Crop, audio_features from SayAnything Whisper Features and "
            "id_features from SayAnything Reference Encode (ID-Guider), optionally style from SayAnything Style "
            "Reference; crops go to SayAnything Face Paste.",
            inputs=[
                SayAnythingModel.Input("model", tooltip="From SayAnything Model Loader."),
                io.Image.Input("crops", tooltip="Aligned face crops from SayAnything Face Crop."),
                io.Mask.Input("crop_mask", tooltip="Editing mask in crop space (1 = regenerate)."),
                WhisperFeatures.Input("audio_features", tooltip="From SayAnything Whisper Features, one per crop."),
                IdFeatures.Input("id_features", tooltip="From SayAnything Reference Encode (ID-Guider)."),
                MouthMotion.Input(
                    "mouth_motion",
                    optional=True,
                    tooltip="Lip motion to follow (SayAnything Mouth Motion from Video / from Audio / Edit), for "
                    "models with a mouth-motion input; resampled to fps, it must last as long as the crops.",
                ),
                fps_input("Frame rate of the video (SVD's fps micro-conditioning)."),
                *sampling_inputs(),
                io.Int.Input(
                    "window",
                    default=0,
                    min=0,
                    max=128,
                    tooltip="Frames denoised together; memory grows with it, not with the video length. "
                    "0 = the window the model was trained with.",
                ),
                io.Int.Input(
                    "overlap",
                    default=-1,
                    min=-1,
                    max=64,
                    tooltip="Frames shared by neighbouring windows, blended at every step to avoid seams; "
                    "smaller than window. -1 = the model's default.",
                ),
                io.Float.Input(
                    "noise_aug_strength",
                    default=-1.0,
                    min=-1.0,
                    max=1.0,
                    step=0.005,
                    optional=True,
                    tooltip="SVD's canvas noise augmentation; it must match what the model was trained "
                    "with, so leave it at -1 (the model's own) unless you know.",
                ),
                io.Int.Input(
                    "decode_chunk",
                    default=8,
                    min=1,
                    max=128,
                    tooltip="Frames the VAE decodes at once; lower it if decoding runs out of memory.",
                ),
                *speed_inputs(),
                *style_inputs(),
                motion_guidance_input(),
            ],
            outputs=[io.Image.Output(display_name="crops")],
        )

    @classmethod
    def execute(
        cls,
        model,
        crops,
        crop_mask,
        audio_features,
        id_features,
        fps: float,
        mouth_motion=None,
        style=None,
        **widgets,
    ) -> io.NodeOutput:
        from ..lipsync_core.inference import generate
        from ..lipsync_core.memory import activation_bytes

        frames = check_frames(crops, "crops")
        options = sampler_options(**widgets)
        progress = comfy.utils.ProgressBar(1)  # re-sized to steps x windows by the first update
        previews = []

        def on_preview(image) -> None:
            previews.append(("JPEG", preview_image(image), PREVIEW_SIZE))

        def on_step(done: int, total: int) -> None:
            # Raises InterruptProcessingException on Cancel; the pipeline's memory is freed by unwinding.
            mm.throw_exception_if_processing_interrupted()
            progress.update_absolute(done, total, previews.pop() if previews else None)

        activations = activation_bytes(model.payload, options, frames.shape[1], motion=mouth_motion is not None)
        try:
            with model.on_device(memory_required=activations) as loaded:
                result = generate(
                    loaded,
                    frames,
                    crop_mask,
                    audio_features,
                    id_features,
                    options,
                    fps=fps,
                    device=model.load_device,
                    callback=on_step,
                    motion=mouth_motion,
                    preview=on_preview,
                    style=style,
                )
        finally:
            mm.soft_empty_cache()
        return io.NodeOutput(result)
