"""Mouth-motion nodes: predict a mouth's motion from speech, take it from a driving video,
edit it, plot it.

A MOUTH_MOTION is ``lipsync_core.motion.MouthMotion``: the 40 lip landmarks per frame in the aligned
face crop (crop units) with their fps and the mouth's rest shape.
"""

from __future__ import annotations

import comfy.utils
import torch
from comfy_api.latest import io

from ..lipsync_core.audio import audio_from_comfy
from . import model_folders
from .face import face_choice_inputs, track_frames
from .types import FaceTrack, MouthMotion, WhisperModel, check_frames, fps_input, node_schema


def _preview(motions: list, labels: list[str]) -> torch.Tensor:
    from ..lipsync_core.motion import plot_motion

    return torch.from_numpy(plot_motion(motions, labels)).float().div(255.0)[None]


class SayAnythingMouthMotionFromVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="SayAnythingMouthMotionFromVideo",
            display_name="SayAnything Mouth Motion from Video",
            description="Tracks the lips of a driving video with mediapipe and gives their motion in the aligned "
            "face crop (head motion and face size removed). With a target face track (from SayAnything Face Mask "
            "on the video to edit) the motion is moved onto that mouth: its size and resting shape (ours). Connect "
            "the driving frames (e.g. from GetVideoComponents) and face_track from SayAnything Face Mask; motion goes "
            "to SayAnything Mouth Motion Edit or SayAnything Mouth Motion Preview.",
            inputs=[
                io.Image.Input("images", tooltip="Frames of the driving video (the mouth to copy)."),
                fps_input("Frame rate of the driving frames; the motion keeps it (later steps resample it)."),
                *face_choice_inputs(),
                FaceTrack.Input(
                    "target_track",
                    optional=True,
                    tooltip="The face that will speak (SayAnything Face Mask's face_track): the motion takes its "
                    "mouth size and rest shape. Without it the driving mouth is kept as it is.",
                ),
            ],
            outputs=[MouthMotion.Output(display_name="motion"), io.Image.Output(display_name="preview")],
        )

    @classmethod
    def execute(cls, images, fps: float, face: str, face_index: int, target_track=None) -> io.NodeOutput:
        from ..lipsync_core.motion import mouth_motion_from_video

        frames = check_frames(images)
        track = track_frames(frames, fps, face, face_index)
        motion = mouth_motion_from_video(track, fps, target=target_track)
        return io.NodeOutput(motion, _preview([motion], ["driving"]))


class SayAnythingMouthMotionFromAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="SayAnythingMouthMotionFromAudio",
            display_name="SayAnything Mouth Motion from Audio",
            description="Predicts the lips' motion from speech with a small Mouth Motion from Audio model "
            "(models/sayanything_motion, trained by `python -m lipsync_core train-motion`) on Whisper features "
            "(ours). Connect whisper from SayAnything Whisper Loader, audio and frame_count from SayAnything Fit "
            "Audio to Video; motion goes to SayAnything Mouth Motion Edit or SayAnything Mouth Motion Preview.",
            inputs=[
                io.Combo.Input(
                    "model",
                    options=model_folders.motion_models(),
                    tooltip="A Mouth Motion from Audio model file in models/sayanything_motion.",
                ),
                WhisperModel.Input(
                    "whisper", tooltip="From SayAnything Whisper Loader: the Whisper the model was trained with."
                ),
                io.Audio.Input("audio", tooltip="The speech."),
                fps_input("Frame rate of the motion (the video's); the model runs at its own and is resampled."),
                io.Int.Input(
                    "frame_count",
                    default=0,
                    min=0,
                    max=1_000_000,
                    tooltip="Frames of motion; 0 = as long as the audio.",
                ),
                FaceTrack.Input(
                    "target_track",
                    optional=True,
                    tooltip="The face that will speak (SayAnything Face Mask's face_track): the motion takes its "
                    "closed mouth. Without it the model's average mouth is used.",
                ),
            ],
            outputs=[MouthMotion.Output(display_name="motion"), io.Image.Output(display_name="preview")],
        )

    @classmethod
    def execute(cls, model: str, whisper, audio: dict, fps: float, frame_count: int, target_track=None):
        from ..lipsync_core.models.mouth_motion import load_mouth_motion_model
        from ..lipsync_core.motion import mouth_motion_from_audio

        network = load_mouth_motion_model(model_folders.resolve_model_path(model_folders.MOTION_FOLDER, model))
        progress = comfy.utils.ProgressBar(1)
        with whisper.on_device() as encoder:
            motion = mouth_motion_from_audio(
                network,  # ~1 M parameters: runs on the CPU, next to the features
                encoder,
                audio_from_comfy(audio),
                fps,
                num_frames=frame_count or None,
                target=target_track,
                progress=progress.update_absolute,
            )
        return io.NodeOutput(motion, _preview([motion], ["from audio"]))


class SayAnythingMouthMotionEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="SayAnythingMouthMotionEdit",
            display_name="SayAnything Mouth Motion Edit",
            description="Edits a mouth motion, in this order: blend with a second motion, smooth over time, "
            "scale the articulation (gain), widen or narrow the mouth, shift in time. The preview plots the "
            "motion before and after. Connect motion from SayAnything Mouth Motion from Video; preview goes to "
            "PreviewImage.",
            inputs=[
                MouthMotion.Input("motion", tooltip="From SayAnything Mouth Motion from Video or from Audio."),
                io.Float.Input(
                    "gain",
                    default=1.0,
                    min=0.0,
                    max=4.0,
                    step=0.05,
                    tooltip="Articulation: the movement away from the closed mouth times this (1.5 = 50 % bigger).",
                ),
                io.Float.Input(
                    "smoothing",
                    default=0.0,
                    min=0.0,
                    max=20.0,
                    step=0.1,
                    tooltip="Gaussian smoothing over time, sigma in frames (0 = off): calmer lips.",
                ),
                io.Float.Input(
                    "width_bias",
                    default=0.0,
                    min=-0.5,
                    max=0.5,
                    step=0.01,
                    tooltip="Widen (+, a smile) or narrow (-, a pucker) the mouth by this fraction of its width.",
                ),
                io.Float.Input(
                    "shift",
                    default=0.0,
                    min=-250.0,
                    max=250.0,
                    step=0.5,
                    tooltip="Move the motion this many frames later (+) or earlier (-); the ends are held.",
                ),
                MouthMotion.Input(
                    "other",
                    optional=True,
                    tooltip="A second motion to blend in (resampled to this one's fps and moved onto its mouth; "
                    "it must last as long).",
                ),
                io.Float.Input(
                    "blend",
                    default=0.5,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    optional=True,
                    tooltip="Share of the second motion (0 = only the first, 1 = only the second).",
                ),
            ],
            outputs=[MouthMotion.Output(display_name="motion"), io.Image.Output(display_name="preview")],
        )

    @classmethod
    def execute(
        cls, motion, gain: float, smoothing: float, width_bias: float, shift: float, other=None, blend: float = 0.5
    ) -> io.NodeOutput:
        from ..lipsync_core.motion import edit_motion

        edited = edit_motion(motion, gain, smoothing, width_bias, shift, other=other, blend=blend)
        return io.NodeOutput(edited, _preview([motion, edited], ["input", "edited"]))


class SayAnythingMouthMotionPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="SayAnythingMouthMotionPreview",
            display_name="SayAnything Mouth Motion Preview",
            description="Plots a mouth motion over time: lip opening (top) and mouth width (bottom) relative to "
            "the closed mouth, a tick per second; a second motion is drawn in another colour to compare. Connect "
            "motions from SayAnything Mouth Motion from Video or SayAnything Mouth Motion Edit.",
            inputs=[
                MouthMotion.Input("motion", tooltip="The motion to plot."),
                MouthMotion.Input("compare", optional=True, tooltip="A second motion drawn over it."),
            ],
            outputs=[io.Image.Output(display_name="preview")],
        )

    @classmethod
    def execute(cls, motion, compare=None) -> io.NodeOutput:
        motions, labels = [motion], ["motion"]
        if compare is not None:
            motions, labels = [motion, compare], ["motion", "compare"]
        return io.NodeOutput(_preview(motions, labels))
