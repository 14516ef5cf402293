"""SayAnything Style Reference: a clip of the speaker talking -> the SAYANYTHING_STYLE the
samplers take, so the lips move the way this person speaks.

A STYLE is ``lipsync_core.style.StyleReference``: the clip's stretch with the most speech, encoded by
the model's style encoder.
"""

from __future__ import annotations

import comfy.utils
from comfy_api.latest import io

from ..lipsync_core.audio import audio_from_comfy
from . import model_folders
from .face import face_choice_inputs
from .types import FaceTrack, SayAnythingModel, SpeakingStyle, WhisperModel, check_frames, fps_input, node_schema


class SayAnythingStyleReference(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="SayAnythingStyleReference",
            display_name="SayAnything Style Reference",
            description="Encodes a reference clip of the same speaker talking (its frames and its own sound) with "
            "the model's speaking-style encoder, so the new lips move the way this person speaks: how wide, how "
            "round, how crisp. The stretch with the most speech is used; the model says how long it must be "
            "(about 2 s for the toy model). Needs a model trained with a style reference. Connect model from "
            "SayAnything Model Loader, whisper from SayAnything Whisper Loader, and the reference's images, audio "
            "and fps from Get Video Components; style goes to SayAnything Sampler or SayAnything Lip Sync Video.",
            inputs=[
                SayAnythingModel.Input("model", tooltip="From SayAnything Model Loader: the model that will sample."),
                WhisperModel.Input(
                    "whisper", tooltip="From SayAnything Whisper Loader: the Whisper the model was trained with."
                ),
                io.Image.Input("images", tooltip="Frames of the reference clip: the same speaker, talking."),
                io.Audio.Input("audio", tooltip="The reference clip's own sound (what the speaker says in it)."),
                fps_input("Frame rate of the reference frames (it is resampled to the model's own)."),
                *face_choice_inputs(),
                FaceTrack.Input(
                    "face_track",
                    optional=True,
                    tooltip="Optional: the face track of the reference frames (SayAnything Load Face Track) instead "
                    "of mediapipe's, for faces mediapipe does not find.",
                ),
            ],
            outputs=[SpeakingStyle.Output(display_name="style")],
        )

    @classmethod
    def execute(
        cls, model, whisper, images, audio, fps: float, face: str, face_index: int, face_track=None
    ) -> io.NodeOutput:
        from ..lipsync_core.style import encode_style_reference

        frames = check_frames(images)
        progress = comfy.utils.ProgressBar(frames.shape[0])
        with model.on_device(whisper) as (loaded, encoder):
            style = encode_style_reference(
                loaded,
                encoder,
                frames,
                None if audio is None or audio["waveform"].shape[-1] == 0 else audio_from_comfy(audio),
                fps,
                track=face_track,
                face=face,
                face_index=face_index,
                model_folders=model_folders.folder_paths_for(model_folders.MEDIAPIPE_FOLDER),
                progress=lambda done, total: progress.update_absolute(done, total),
            )
        return io.NodeOutput(style)
