"""Audio loading (any container PyAV opens), mono mix, resampling and loudness normalisation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

WHISPER_SAMPLE_RATE = 16000

ArrayLike = np.ndarray | torch.Tensor


@dataclass
class Audio:
    """Mono audio: ``waveform`` float32 ``[N]`` (about -1..1) at ``sample_rate`` Hz."""

    waveform: torch.Tensor
    sample_rate: int

    def __post_init__(self) -> None:
        waveform = torch.as_tensor(self.waveform, dtype=torch.float32).detach().cpu()
        if waveform.ndim != 1:
            raise ValueError(
                f"Audio.waveform must be mono with shape [N], got {tuple(waveform.shape)}; "
                "mix channels first (load_audio and audio_from_comfy do this)."
            )
        if int(self.sample_rate) <= 0:
            raise ValueError(f"Audio.sample_rate must be a positive number of Hz, got {self.sample_rate}.")
        self.waveform = waveform.contiguous()
        self.sample_rate = int(self.sample_rate)

    @property
    def num_samples(self) -> int:
        return int(self.waveform.shape[0])

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    @classmethod
    def silence(cls, num_samples: int, sample_rate: int = WHISPER_SAMPLE_RATE) -> Audio:
        return cls(torch.zeros(int(num_samples)), sample_rate)


def resample(waveform: ArrayLike, orig_sample_rate: int, target_sample_rate: int) -> torch.Tensor:
    """Resample mono float audio with libswresample's windowed-sinc filter (through PyAV)."""
    import av

    samples = torch.as_tensor(waveform, dtype=torch.float32).detach().cpu().reshape(-1)
    if orig_sample_rate == target_sample_rate or samples.numel() == 0:
        return samples.clone()
    resampler = av.AudioResampler(format="flt", layout="mono", rate=int(target_sample_rate))
    frame = av.AudioFrame.from_ndarray(samples.numpy()[None, :], format="flt", layout="mono")
    frame.sample_rate = int(orig_sample_rate)
    chunks = [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]  # flush the filter tail
    out = torch.from_numpy(np.concatenate(chunks) if chunks else np.zeros(0, np.float32))
    # swresample may emit a sample more or less than the ideal length: make the length exact so that
    # long clips never drift against the video.
    expected = round(samples.numel() * target_sample_rate / orig_sample_rate)
    if out.numel() >= expected:
        return out[:expected].contiguous()
    return torch.nn.functional.pad(out, (0, expected - out.numel()))


def load_audio(
    path: str | Path,
    sample_rate: int = WHISPER_SAMPLE_RATE,
    loudness_lufs: float | None = None,
    sync_to_video: bool = True,
) -> Audio:
    """Decode the first audio stream of any file PyAV (FFmpeg) opens, mix to mono and resample.

    ``loudness_lufs`` (e.g. -23.0) normalises integrated loudness (ITU-R BS.1770) when given. For a
    video file, ``sync_to_video`` makes sample 0 the time of the first video frame: audio that starts
    later is preceded by silence, audio that starts earlier is trimmed (containers often offset the two).
    """
    channels, native_rate = read_audio_channels(path, sync_to_video)
    waveform = resample(channels.mean(axis=0), native_rate, sample_rate)
    audio = Audio(waveform, sample_rate)
    if loudness_lufs is not None:
        audio = normalize_loudness(audio, loudness_lufs)
    return audio


def read_audio_channels(path: str | Path, sync_to_video: bool = True) -> tuple[np.ndarray, int]:
    """Every channel of the first audio stream, ``float32 [channels, samples]`` at its own sample rate
    (what a video is muxed with); ``sync_to_video`` as in :func:`load_audio`."""
    import av

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Audio file not found: {path}")
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise ValueError(
            f"Could not open {path} as audio or video ({error}). Use a common audio or video file "
            "(wav, flac, mp3, m4a, ogg, mp4, mkv, mov, webm)."
        ) from error
    with container:
        if not container.streams.audio:
            raise ValueError(
                f"{path} has no audio stream. Give the speech as a separate audio file, or a video "
                "that contains sound."
            )
        stream = container.streams.audio[0]
        video_start = None
        if sync_to_video and container.streams.video:
            video = container.streams.video[0]
            if video.start_time is not None and video.time_base is not None:
                video_start = float(video.start_time * video.time_base)
        chunks = []
        native_rate, audio_start = None, None
        try:
            for frame in container.decode(stream):
                if native_rate is None:
                    native_rate, audio_start = frame.sample_rate, frame.time
                data = frame.to_ndarray()
                if data.dtype.kind == "i":
                    data = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
                elif data.dtype.kind == "u":  # 8-bit PCM is unsigned around 128
                    half = float(np.iinfo(data.dtype).max // 2 + 1)
                    data = (data.astype(np.float32) - half) / half
                if not frame.format.is_planar:
                    data = data.reshape(-1, len(frame.layout.channels)).T
                chunks.append(data.astype(np.float32))
        except av.FFmpegError as error:
            raise ValueError(f"Could not decode the audio of {path} ({error}); the file may be corrupt.") from error
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise ValueError(f"{path} contains no audio samples (empty audio stream).")
    samples = np.concatenate(chunks, axis=1)
    if video_start is not None and audio_start is not None:
        shift = round((audio_start - video_start) * native_rate)
        if shift > 0:
            samples = np.concatenate([np.zeros((samples.shape[0], shift), np.float32), samples], axis=1)
        else:
            samples = samples[:, -shift:]
    return samples, native_rate


def audio_from_comfy(audio: Mapping[str, Any], sample_rate: int = WHISPER_SAMPLE_RATE) -> Audio:
    """ComfyUI AUDIO ``{"waveform": [B, C, N], "sample_rate": int}`` -> mono :class:`Audio` (first batch item)."""
    if "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError("AUDIO must be a dict with 'waveform' [B, C, N] and 'sample_rate' (ComfyUI layout).")
    waveform = torch.as_tensor(audio["waveform"], dtype=torch.float32).detach().cpu()
    if waveform.ndim == 1:
        waveform = waveform[None, None]
    elif waveform.ndim == 2:
        waveform = waveform[None]
    if waveform.ndim != 3:
        raise ValueError(f"AUDIO waveform must be [B, C, N], got shape {tuple(waveform.shape)}.")
    if waveform.shape[-1] == 0 or waveform.shape[0] == 0:
        raise ValueError("The AUDIO input is empty (0 samples). Connect audio that contains sound.")
    mono = waveform[0].mean(dim=0)
    return Audio(resample(mono, int(audio["sample_rate"]), sample_rate), sample_rate)


def audio_to_comfy(audio: Audio) -> dict:
    """:class:`Audio` -> ComfyUI AUDIO dict ``{"waveform": [1, 1, N], "sample_rate": int}``."""
    return {"waveform": audio.waveform.reshape(1, 1, -1).clone(), "sample_rate": audio.sample_rate}


def integrated_loudness(audio: Audio) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770, measured by pyloudnorm); ``-inf`` for silence."""
    import pyloudnorm

    meter = pyloudnorm.Meter(audio.sample_rate)
    x = audio.waveform.double().numpy()
    block = int(meter.block_size * audio.sample_rate) + 1
    if x.size < block:  # pyloudnorm needs more than one 400 ms block; a shorter clip is one padded block
        x = np.pad(x, (0, block - x.size))
    return float(meter.integrated_loudness(x))


def normalize_loudness(audio: Audio, target_lufs: float = -23.0, peak_limit: float = 0.999) -> Audio:
    """Scale to ``target_lufs`` integrated loudness; silence is returned unchanged; peaks stay below ``peak_limit``."""
    current = integrated_loudness(audio)
    if not np.isfinite(current):
        return Audio(audio.waveform.clone(), audio.sample_rate)
    gain = 10 ** ((target_lufs - current) / 20)
    peak = float(audio.waveform.abs().max()) * gain
    if peak > peak_limit:
        gain *= peak_limit / peak  # never clip: quieter than asked beats distorted
    return Audio(audio.waveform * gain, audio.sample_rate)


def save_wav(audio: Audio, path: str | Path) -> Path:
    """Write 16-bit PCM wav (standard library only)."""
    import wave

    path = Path(path)
    pcm = (audio.waveform.clamp(-1, 1).numpy() * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(audio.sample_rate)
        out.writeframes(pcm.tobytes())
    return path
