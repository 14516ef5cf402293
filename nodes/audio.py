"""Audio nodes: load speech from an audio or video file, and fit audio and frames to each other."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from ..lipsync_core.audio import FIT_MODES, audio_from_comfy, audio_to_comfy
from .types import check_frames, node_schema


class SayAnythingLoadAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        input_dir = folder_paths.get_input_directory()
        files = [f for f in os.listdir(input_dir) if os.path.isfile(os.path.join(input_dir, f))]
        files = folder_paths.filter_files_content_types(files, ["audio", "video"])
        return node_schema(
            node_id="SayAnythingLoadAudio",
            display_name="SayAnything Load Audio",
            description="Loads speech from an audio or video file in ComfyUI's input folder (any format "
            "PyAV reads), as mono at its own sample rate, optionally trimmed. Connect audio to SayAnything "
            "Fit Audio to Video (or any AUDIO input).",
            inputs=[
                # No upload button: ComfyUI 0.3.75's frontend draws the audio upload widget only for its
                # own audio nodes. Files uploaded with core LoadAudio or LoadVideo appear here too.
                io.Combo.Input("audio", options=sorted(files),
                               tooltip="An audio or video file in ComfyUI's input folder (upload one with core "
                               "Load Audio / Load Video, or copy it there, then press R to refresh)."),
                io.Float.Input("start", default=0.0, min=0.0, max=36000.0, step=0.01,
                               tooltip="Seconds to skip at the beginning of the file."),
                io.Float.Input("duration", default=0.0, min=0.0, max=36000.0, step=0.01,
                               tooltip="Seconds to keep after start; 0 keeps everything to the end."),
            ],
            outputs=[io.Audio.Output(display_name="audio")],
        )

    @classmethod
    def execute(cls, audio: str, start: float, duration: float) -> io.NodeOutput:
        from ..lipsync_core.inference import load_audio

        path = folder_paths.get_annotated_filepath(audio)
        return io.NodeOutput(audio_to_comfy(load_audio(path, start=start, duration=duration or None)))

    @classmethod
    def fingerprint_inputs(cls, audio: str, start: float, duration: float):
        return os.path.getmtime(folder_paths.get_annotated_filepath(audio))

    @classmethod
    def validate_inputs(cls, audio: str):
        if not folder_paths.exists_annotated_filepath(audio):
            return f"Audio file not found in the input folder: {audio}. Upload it with the node's button."
        return True


class SayAnythingFitAudioToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="SayAnythingFitAudioToVideo",
            display_name="SayAnything Fit Audio to Video",
            description="Makes frames and speech the same length. A single image becomes a still video "
            "as long as the audio. Connect images from GetVideoComponents or Load Image and audio from "
            "SayAnything Load Audio or Load Audio; images go on to SayAnything Face Mask, audio and "
            "frame_count to SayAnything Whisper Features (and audio to CreateVideo).",
            inputs=[
                io.Image.Input("images", tooltip="The video frames, or one image to make a talking still."),
                io.Audio.Input("audio", tooltip="The speech the lips should follow."),
                io.Float.Input("fps", default=25.0, min=1.0, max=240.0, step=0.001,
                               tooltip="Frame rate of the frames; connect GetVideoComponents' fps for a video."),
                io.Combo.Input("mode", options=list(FIT_MODES), default="loop",
                               tooltip="loop / pingpong: the audio sets the length, the video repeats (forwards, "
                               "or forwards then backwards) or is cut; pad_silence: the video sets the length, "
                               "the audio is padded with silence or cut; cut: the shorter one sets the length. "
                               "A single image is held as long as needed."),
            ],
            outputs=[
                io.Image.Output(display_name="images"),
                io.Audio.Output(display_name="audio"),
                io.Int.Output(display_name="frame_count"),
            ],
        )

    @classmethod
    def execute(cls, images, audio: dict, fps: float, mode: str) -> io.NodeOutput:
        from ..lipsync_core.inference import fit_audio_and_frames

        frames, fitted = fit_audio_and_frames(check_frames(images), audio_from_comfy(audio), fps=fps, mode=mode)
        return io.NodeOutput(frames, audio_to_comfy(fitted), int(frames.shape[0]))
