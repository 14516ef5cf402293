"""Audio: loading (PyAV), fitting audio and video lengths, Whisper loading/conversion/per-frame features."""

from .fit import FIT_MODES, FitResult, as_fps, fit_audio_video, frame_count, frame_start_sample
from .io import (
    WHISPER_SAMPLE_RATE,
    Audio,
    audio_from_comfy,
    audio_to_comfy,
    integrated_loudness,
    load_audio,
    normalize_loudness,
    read_audio_channels,
    resample,
    save_wav,
)
from .whisper import (
    DEFAULT_FEATURE_WINDOW,
    WhisperAudioEncoder,
    convert_ctranslate2_whisper,
    convert_openai_whisper,
    convert_whisper,
    frame_windows,
    load_whisper_encoder,
    read_ctranslate2_model,
)

__all__ = [
    "FIT_MODES", "FitResult", "as_fps", "fit_audio_video", "frame_count", "frame_start_sample",
    "WHISPER_SAMPLE_RATE", "Audio", "audio_from_comfy", "audio_to_comfy", "integrated_loudness", "load_audio",
    "normalize_loudness", "read_audio_channels", "resample", "save_wav",
    "DEFAULT_FEATURE_WINDOW", "WhisperAudioEncoder", "convert_ctranslate2_whisper", "convert_openai_whisper",
    "convert_whisper", "frame_windows", "load_whisper_encoder", "read_ctranslate2_model",
]
