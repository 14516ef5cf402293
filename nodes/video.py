"""SayAnything Lip Sync Video: VIDEO + AUDIO in, VIDEO out, streamed from file to file.

For clips of any length: the video is never a whole IMAGE batch in memory (lipsync_core.streaming).
The result is a file in ComfyUI's temp folder behind a core VIDEO, so SaveVideo and the preview
work on it as on LoadVideo's output.
"""

from __future__ import annotations

import os
import uuid

import comfy.model_management as mm
import comfy.utils
import folder_paths
from comfy_api.latest import InputImpl, io

from ..lipsync_core.audio import FIT_MODES
from ..lipsync_core.plan import FaceOptions, Stage
from . import model_folders
from .face import AUTO_EDGE, UPPER_EDGES
from .types import (
    FaceTrack,
    MouthMotion,
    SayAnythingModel,
    WhisperModel,
    auto,
    motion_guidance_input,
    node_schema,
    sampler_options,
    sampling_inputs,
    speed_inputs,
    style_inputs,
)

# The stages of a run, in order (the progress bar has one share each).
RUN_STAGES = (Stage.TRACKING, Stage.AUDIO_FEATURES, Stage.CANVAS, Stage.DENOISING, Stage.WRITING)


class SayAnythingLipSyncVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="SayAnythingLipSyncVideo",
            display_name="SayAnything Lip Sync Video",
            description="Lip-syncs a whole VIDEO (from Load Video) to AUDIO in one node, streaming frames from "
            "file to file, so long clips fit in memory. Connect SayAnything Model Loader (a SayAnything or a "
            "MuseTalk 1.5 model) and Whisper Loader; "
            "send the output to Save Video. Settings left on auto (0 / -1) come from the model file. An optional "
            "mouth_motion (SayAnything Mouth Motion nodes) steers the lips of models with a mouth-motion input.",
            inputs=[
                SayAnythingModel.Input("model", tooltip="From SayAnything Model Loader."),
                WhisperModel.Input("whisper", tooltip="From SayAnything Whisper Loader."),
                io.Video.Input("video", tooltip="The video whose lips to re-sync (core Load Video)."),
                io.Audio.Input(
                    "audio",
                    tooltip="The new speech (core Load Audio or SayAnything Load Audio). It is "
                    "muxed into the output as it is.",
                ),
                io.Combo.Input(
                    "fit",
                    options=list(FIT_MODES),
                    default="loop",
                    tooltip="When lengths differ: loop or pingpong the video to the audio, pad the audio "
                    "with silence to the video, or cut both to the shorter.",
                ),
                *sampling_inputs(),
                io.Int.Input(
                    "crop_size",
                    default=0,
                    min=0,
                    max=1024,
                    step=8,
                    tooltip="Side of the aligned face crop; 0 = the size the model was trained at.",
                ),
                io.Combo.Input(
                    "upper_edge",
                    options=[AUTO_EDGE, *UPPER_EDGES],
                    default=AUTO_EDGE,
                    tooltip="Top of the editing mask; higher hides more of the source lips (less "
                    "leakage). auto = the model's default.",
                ),
                io.Int.Input(
                    "reference_frame",
                    default=0,
                    min=0,
                    max=1_000_000,
                    tooltip="Which output frame's face is the identity reference.",
                ),
                io.Float.Input(
                    "crf",
                    default=16.0,
                    min=0.0,
                    max=51.0,
                    step=0.5,
                    tooltip="x264 quality of the streamed file (lower is better; 16 is close to "
                    "lossless). Save Video may encode again.",
                ),
                *speed_inputs(),
                FaceTrack.Input(
                    "face_track",
                    optional=True,
                    tooltip="Optional: the face track of this video's frames (SayAnything Load Face Track) instead "
                    "of mediapipe's, for faces mediapipe does not find.",
                ),
                MouthMotion.Input(
                    "mouth_motion",
                    optional=True,
                    tooltip="Lip motion to follow (SayAnything Mouth Motion from Video / from Audio / Edit), for "
                    "models with a mouth-motion input; moved onto this face's mouth and resampled to the video's "
                    "fps, it must last as long as the output.",
                ),
                *style_inputs(),
                motion_guidance_input(),
            ],
            outputs=[io.Video.Output(display_name="video")],
        )

    @classmethod
    def execute(
        cls,
        model,
        whisper,
        video,
        audio: dict,
        fit: str,
        crop_size: int,
        upper_edge: str,
        reference_frame: int,
        crf: float,
        face_track=None,
        mouth_motion=None,
        style=None,
        **widgets,
    ) -> io.NodeOutput:
        from ..lipsync_core.audio import audio_from_comfy
        from ..lipsync_core.memory import activation_bytes
        from ..lipsync_core.streaming import StreamSettings, lipsync_file

        source = video.get_stream_source() if hasattr(video, "get_stream_source") else None
        temp = folder_paths.get_temp_directory()
        os.makedirs(temp, exist_ok=True)
        if not isinstance(source, str):  # an in-memory VIDEO (e.g. Create Video): give it a file first
            source = os.path.join(temp, f"sayanything-source-{uuid.uuid4().hex[:12]}.mp4")
            video.save_to(source)
        output = os.path.join(temp, f"sayanything-{uuid.uuid4().hex[:12]}.mp4")
        waveform = audio["waveform"]
        if waveform.ndim != 3 or waveform.shape[-1] == 0:
            raise ValueError("the audio is empty; connect speech from Load Audio")
        face = FaceOptions(
            upper_edge=auto(upper_edge, AUTO_EDGE),
            crop_size=auto(crop_size, 0),
            model_folders=model_folders.folder_paths_for(model_folders.MEDIAPIPE_FOLDER),
        )
        stages = list(RUN_STAGES)
        bar = comfy.utils.ProgressBar(len(stages))

        def progress(stage: Stage, done: int, total: int) -> None:
            # Raises InterruptProcessingException on Cancel; the writer then deletes its partial file.
            mm.throw_exception_if_processing_interrupted()
            share = done / total if total else 0.0
            bar.update_absolute(int(1000 * (stages.index(stage) + share)), 1000 * len(stages))

        options = sampler_options(**widgets)
        activations = activation_bytes(model.payload, options, face.crop_size, motion=mouth_motion is not None)
        try:
            with model.on_device(whisper, memory_required=activations) as (loaded, encoder):
                lipsync_file(
                    source,
                    audio_from_comfy(audio),
                    output,
                    loaded,
                    encoder,
                    options,
                    face,
                    fit_mode=fit,
                    reference_index=reference_frame,
                    mux_audio=(waveform[0].float().numpy(), int(audio["sample_rate"])),
                    settings=StreamSettings(crf=crf, spill_dir=temp),
                    device=model.load_device,
                    progress=progress,
                    track=face_track,
                    motion=mouth_motion,
                    style=style,
                )
        finally:
            mm.soft_empty_cache()
        return io.NodeOutput(InputImpl.VideoFromFile(output))
