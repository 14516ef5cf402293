"""Audio loading from real containers, resampling, loudness, ComfyUI AUDIO, and fitting audio to video."""

from __future__ import annotations

import subprocess
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from lipsync_core.audio import (
    Audio,
    as_fps,
    audio_from_comfy,
    audio_to_comfy,
    fit_audio_video,
    frame_count,
    frame_start_sample,
    integrated_loudness,
    load_audio,
    normalize_loudness,
    resample,
)


def _tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(waveform: torch.Tensor, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform.numpy() * np.hanning(waveform.numel())))
    return float(np.fft.rfftfreq(waveform.numel(), 1 / rate)[spectrum.argmax()])


def _write_mp4(
    path, frames: int = 10, audio: np.ndarray | None = None, rate: int = 44100, audio_delay: float = 0.0
) -> None:
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        if audio is not None:
            sound = container.add_stream("aac", rate=rate)
            sound.layout = "stereo"
        for i in range(frames):
            image = np.full((64, 64, 3), (i * 20) % 256, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is not None:
            stereo = np.stack([audio, audio]).astype(np.float32)
            chunk, offset = 1024, round(audio_delay * rate)
            for start in range(0, stereo.shape[1], chunk):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(stereo[:, start : start + chunk]), format="fltp", layout="stereo"
                )
                frame.sample_rate = rate
                frame.pts, frame.time_base = offset + start, Fraction(1, rate)
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)


def test_load_espeak_wav_resamples_to_16k(speech_wav, tmp_path):
    raw = tmp_path / "raw.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), "Hello there."], check=True)
    with av.open(str(raw)) as container:
        stream = container.streams.audio[0]
        native_rate, native_seconds = stream.rate, float(stream.duration * stream.time_base)
    assert native_rate == 22050
    audio = load_audio(raw)
    assert audio.sample_rate == 16000 and audio.waveform.ndim == 1
    assert audio.num_samples == round(native_seconds * 16000)
    assert 0.05 < audio.waveform.abs().max() <= 1.0


def test_stereo_44k_mixes_to_mono_and_keeps_pitch(tmp_path):
    path = tmp_path / "stereo.wav"
    subprocess.run(
        ["sox", "-n", "-r", "44100", "-c", "2", str(path), "synth", "1.0", "sine", "440", "sine", "440", "vol", "0.5"],
        check=True,
    )
    audio = load_audio(path)
    assert audio.sample_rate == 16000 and audio.num_samples == 16000
    assert abs(_peak_hz(audio.waveform, 16000) - 440) < 2
    assert audio.waveform.abs().max() == pytest.approx(0.5, abs=0.02)  # a mean of channels, not a sum


def test_resampler_filters_aliases():
    # 9 kHz is above the 8 kHz Nyquist limit of 16 kHz audio: a proper resampler removes it
    # instead of folding it back to 7 kHz; a 3 kHz tone passes unchanged.
    passed = resample(_tone(3000, 1.0, 48000), 48000, 16000)
    aliased = resample(_tone(9000, 1.0, 48000), 48000, 16000)
    assert passed.numel() == aliased.numel() == 16000
    assert float(passed[1000:-1000].abs().max()) == pytest.approx(0.5, abs=0.02)
    assert float(aliased[1000:-1000].abs().max()) < 0.01


def test_video_container_audio_and_video_without_sound(tmp_path):
    with_sound = tmp_path / "talk.mp4"
    _write_mp4(with_sound, audio=_tone(440, 1.0, 44100))
    audio = load_audio(with_sound)
    assert abs(audio.duration - 1.0) < 0.06 and abs(_peak_hz(audio.waveform, 16000) - 440) < 3
    silent_video = tmp_path / "silent.mp4"
    _write_mp4(silent_video, audio=None)
    with pytest.raises(ValueError, match="has no audio stream"):
        load_audio(silent_video)


def test_audio_of_a_video_is_synced_to_its_first_frame(tmp_path):
    # the audio track starts 0.2 s after the video in the container: the tone must start at 0.2 s
    path = tmp_path / "late.mp4"
    _write_mp4(path, frames=50, audio=_tone(440, 1.0, 44100), audio_delay=0.2)
    synced = load_audio(path)
    onset = np.flatnonzero(synced.waveform.abs().numpy() > 0.1)[0] / 16000
    assert abs(onset - 0.2) < 0.005
    unsynced = load_audio(path, sync_to_video=False)
    assert np.flatnonzero(unsynced.waveform.abs().numpy() > 0.1)[0] / 16000 < 0.1


def test_bad_files_have_clear_messages(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="corrupt|Could not open"):
        load_audio(corrupt)
    with pytest.raises(ValueError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(empty), "trim", "0", "0"], check=True)
    with pytest.raises(ValueError, match="no audio samples"):
        load_audio(empty)
    with pytest.raises(ValueError, match="empty"):
        audio_from_comfy({"waveform": torch.zeros(1, 2, 0), "sample_rate": 44100})
    with pytest.raises(ValueError, match="mono"):
        Audio(torch.zeros(2, 100), 16000)


def test_comfy_audio_roundtrip_any_rate_and_channels():
    stereo = torch.from_numpy(np.stack([_tone(440, 0.5, 44100, 0.4), _tone(440, 0.5, 44100, 0.2)]))[None]
    audio = audio_from_comfy({"waveform": stereo, "sample_rate": 44100})
    assert audio.sample_rate == 16000 and audio.num_samples == 8000
    assert float(audio.waveform[500:-500].abs().max()) == pytest.approx(0.3, abs=0.01)
    back = audio_to_comfy(audio)
    assert back["waveform"].shape == (1, 1, 8000) and back["sample_rate"] == 16000


def test_loudness_normalisation(speech_wav):
    speech = load_audio(speech_wav)
    quiet = Audio(speech.waveform * 0.05, 16000)
    louder = normalize_loudness(quiet, -23.0)
    assert integrated_loudness(louder) == pytest.approx(-23.0, abs=0.1)
    assert louder.waveform.abs().max() < 1.0
    # never clips: a target above what the peaks allow stops at the peak limit
    assert float(normalize_loudness(speech, 0.0).waveform.abs().max()) == pytest.approx(0.999, abs=1e-3)
    silence = Audio.silence(16000)
    assert torch.equal(normalize_loudness(silence).waveform, silence.waveform)


def test_loudness_meter_calibration():
    """BS.1770's calibration and gating, which a wrongly wired meter (rate, layout, gates) would miss."""

    def lufs(wave: np.ndarray, rate: int) -> float:
        return integrated_loudness(Audio(torch.from_numpy(wave), rate))

    # a full-scale 997 Hz sine reads -3.01 LUFS at any rate (EBU Tech 3341 tolerance 0.1 LU)
    for rate in (48000, 44100, 16000):
        assert lufs(_tone(997, 2.0, rate, 1.0), rate) == pytest.approx(-3.01, abs=0.1)
    # half the amplitude is 6.02 LU quieter
    assert lufs(_tone(997, 2.0, 48000, 0.5), 48000) == pytest.approx(-3.01 - 6.02, abs=0.1)
    # silence is gated out (absolute gate): a 2 s pause in 4 s of tone lowers the reading only through
    # the blocks that straddle its edges, not by the 1.76 LU of a plain average over 6 s...
    tone = _tone(997, 2.0, 16000, 0.5)
    paused = np.concatenate([tone, np.zeros(32000, np.float32), tone])
    assert lufs(paused, 16000) == pytest.approx(lufs(tone, 16000), abs=0.5)
    # ... and passages 30 dB down by the relative gate (-10 LU), not the 3 LU of a plain average
    with_quiet = np.concatenate([tone, tone * 10 ** (-30 / 20)])
    assert lufs(with_quiet, 16000) == pytest.approx(lufs(tone, 16000), abs=0.5)
    assert lufs(np.zeros(16000, np.float32), 16000) == float("-inf")
    # shorter than one 400 ms block is still measured
    assert np.isfinite(lufs(_tone(997, 0.2, 16000, 0.5), 16000))


def test_fps_fractions():
    assert as_fps(29.97) == Fraction(30000, 1001)
    assert as_fps(23.976) == Fraction(24000, 1001)
    assert as_fps(59.94) == Fraction(60000, 1001)
    assert as_fps(25) == 25 and as_fps(30.0) == 30 and as_fps("30000/1001") == Fraction(30000, 1001)
    assert as_fps(12.5) == Fraction(25, 2)
    with pytest.raises(ValueError):
        as_fps(0)


@pytest.mark.parametrize("fps", [Fraction(24000, 1001), Fraction(30000, 1001), 25, 60])
def test_ten_minutes_stay_in_sync(fps):
    rate, seconds = 16000, 600
    frames = frame_count(seconds * rate, rate, fps)
    assert frames == round(seconds * float(as_fps(fps)))  # 14386 at 23.976, 17982 at 29.97
    # every frame starts within half a sample of its exact time, the last one included: no drift
    for i in (0, 1, frames // 2, frames - 1, frames):
        exact = i * rate / as_fps(fps)
        assert abs(frame_start_sample(i, rate, fps) - exact) <= Fraction(1, 2)
    # frames get audio chunks that differ by at most one sample: the error never accumulates
    lengths = np.diff([frame_start_sample(i, rate, fps) for i in range(frames + 1)])
    assert lengths.max() - lengths.min() <= 1
    fitted = fit_audio_video(Audio.silence(seconds * rate), 10, fps, mode="loop")
    assert fitted.num_frames == frames and fitted.audio.num_samples == frame_start_sample(frames, rate, fps)
    assert abs(fitted.audio.num_samples / rate - frames / float(as_fps(fps))) < 1 / rate


def test_fit_modes():
    audio = Audio.silence(16000 * 2)  # 2 s = 50 frames at 25 fps
    cut = fit_audio_video(audio, 80, 25, "cut")
    assert cut.num_frames == 50 and cut.audio.num_samples == 32000 and list(cut.frame_indices[:3]) == [0, 1, 2]
    cut_audio = fit_audio_video(audio, 30, 25, "cut")
    assert cut_audio.num_frames == 30 and cut_audio.audio.num_samples == 19200
    padded = fit_audio_video(audio, 80, 25, "pad_silence")
    assert padded.num_frames == 80 and padded.audio.num_samples == 51200
    assert not padded.audio.waveform[32000:].any()
    looped = fit_audio_video(audio, 20, 25, "loop")
    assert looped.num_frames == 50 and list(looped.frame_indices[18:23]) == [18, 19, 0, 1, 2]
    pingpong = fit_audio_video(audio, 4, 25, "pingpong")
    assert list(pingpong.frame_indices[:10]) == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    still = fit_audio_video(audio, 1, 25, "pingpong")
    assert still.num_frames == 50 and not still.frame_indices.any()
    with pytest.raises(ValueError, match="Unknown fit mode"):
        fit_audio_video(audio, 10, 25, "stretch")
    with pytest.raises(ValueError, match="empty"):
        fit_audio_video(Audio.silence(0), 10, 25)
    with pytest.raises(ValueError, match="shorter than one video frame"):
        fit_audio_video(Audio.silence(10), 10, 25)
