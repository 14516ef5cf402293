"""Whisper nodes: load an encoder from ``models/whisper`` and turn speech into per-frame features."""

from __future__ import annotations

import comfy.utils
from comfy_api.latest import io

from ..lipsync_core.audio import audio_from_comfy
from . import model_folders
from .types import PRECISIONS, WhisperFeatures, WhisperModel, node_schema

DEVICES = ["auto", "cpu"]


def whisper_path(name: str) -> str:
    """Full path of a Whisper model in the whisper folder: an openai .pt file or a folder."""
    is_file = name.endswith((".pt", ".pth"))
    return model_folders.resolve_model_path(model_folders.WHISPER_FOLDER, name, is_dir=not is_file)


class SayAnythingWhisperLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="SayAnythingWhisperLoader",
            display_name="SayAnything Whisper Loader",
            description="Loads a Whisper encoder from models/whisper: a transformers folder (config.json + "
            "model.safetensors), a CTranslate2 / faster-whisper folder (model.bin) or an openai-whisper .pt "
            "file; the last two are converted once into '<name>-transformers' next to them. Connect whisper "
            "to SayAnything Whisper Features.",
            inputs=[
                io.Combo.Input("model", options=model_folders.whisper_models(),
                               tooltip="A Whisper model inside models/whisper (transformers or CTranslate2 folder, "
                               "or openai .pt). Use the size the SayAnything model was trained with (tiny by "
                               "default); MuseTalk needs the multilingual tiny (openai/whisper-tiny or openai's "
                               "tiny.pt), not tiny.en."),
                io.Combo.Input("precision", options=PRECISIONS, default="auto",
                               tooltip="Weight precision; auto picks what the device runs best."),
                io.Combo.Input("device", options=DEVICES, default="auto",
                               tooltip="auto runs on ComfyUI's GPU and moves back to the CPU when idle; "
                               "cpu keeps Whisper off the GPU."),
            ],
            outputs=[WhisperModel.Output(display_name="whisper")],
        )

    @classmethod
    def validate_inputs(cls, model: str):
        try:
            whisper_path(model)
        except ValueError as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, model: str, precision: str, device: str) -> io.NodeOutput:
        from .model import load_whisper_managed

        return io.NodeOutput(load_whisper_managed(whisper_path(model), precision=precision, device=device))


class SayAnythingWhisperFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="SayAnythingWhisperFeatures",
            display_name="SayAnything Whisper Features",
            description="Encodes speech with Whisper (all layers, 30 s windows) and cuts one window of "
            "encoder frames per video frame, aligned to each frame's time at the given fps. Connect whisper "
            "from SayAnything Whisper Loader, audio and frame_count from SayAnything Fit Audio to Video; "
            "features go to SayAnything Sampler's audio_features.",
            inputs=[
                WhisperModel.Input("whisper", tooltip="From SayAnything Whisper Loader."),
                io.Audio.Input("audio", tooltip="The speech, already fitted to the video."),
                io.Float.Input("fps", default=25.0, min=1.0, max=240.0, step=0.001,
                               tooltip="Frame rate of the video the features are for."),
                io.Int.Input("frame_count", default=1, min=1, max=1_000_000,
                             tooltip="Number of video frames; connect SayAnything Fit Audio to Video's frame_count."),
                io.Int.Input("window", default=10, min=1, max=50,
                             tooltip="Whisper encoder frames (50 per second) per video frame, centred on it "
                             "(ours: 10, as in LatentSync). Must match what the model was trained with."),
            ],
            outputs=[WhisperFeatures.Output(display_name="features")],
        )

    @classmethod
    def execute(cls, whisper, audio: dict, fps: float, frame_count: int, window: int) -> io.NodeOutput:
        from ..lipsync_core.inference import whisper_features

        progress = comfy.utils.ProgressBar(1)
        with whisper.on_device() as encoder:
            features = whisper_features(encoder, audio_from_comfy(audio), fps=fps, frame_count=frame_count,
                                        window=window, progress=progress.update_absolute)
        return io.NodeOutput(features)
