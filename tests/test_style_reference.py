"""The speaking-style reference (issue 10) from a clip to the sampler: ``lipsync_core.style``, the style in
``inference.lipsync`` / ``streaming.lipsync_file``, and ``run --style-video``.

The reference is the real portrait (mediapipe tracks it) with espeak-ng speech after 1.5 s of silence; the
model is the shipped toy model with a style encoder whose output layer is live (tests/support/style.py).
Model-level behaviour (a fresh encoder changes nothing, ...) is tested with the model core.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsync_core import inference
from lipsync_core.audio import Audio
from lipsync_core.style import StyleReference, encode_style_reference
from tests.support.style import STYLE_FRAMES, write_plain_model, write_style_model

REPO = Path(__file__).resolve().parents[1]
FPS = 25.0
LEAD = 1.5  # seconds of silence before the speech


@pytest.fixture(autouse=True)
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("style_models")
    return {"style": write_style_model(folder / "style.safetensors"),
            "plain": write_plain_model(folder / "plain.safetensors")}


@pytest.fixture(scope="module")
def style_model(model_files):
    return inference.load_model(model_files["style"])


@pytest.fixture(scope="module")
def reference(astronaut, speech_wav):
    """``(frames uint8 [T, 256, 256, 3], audio)``: the portrait drifting, silent for LEAD s, then talking."""
    import cv2

    speech = inference.load_audio(speech_wav)
    audio = Audio(torch.cat([torch.zeros(int(LEAD * speech.sample_rate)), speech.waveform]), speech.sample_rate)
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    count = int(audio.duration * FPS)
    return np.stack([np.roll(small, i % 9, axis=1) for i in range(count)]), audio


def test_the_stretch_with_the_most_speech_is_encoded(style_model, whisper_encoder, reference):
    frames, audio = reference
    style = encode_style_reference(style_model, whisper_encoder, frames, audio, FPS)
    assert isinstance(style, StyleReference)
    assert style.tokens.shape == (1, STYLE_FRAMES, style_model.model.config.style.hidden_dim)
    assert style.duration == pytest.approx(STYLE_FRAMES / FPS)
    # Not the silent lead-in: the stretch starts where the speech does.
    assert LEAD - 0.1 <= style.start <= audio.duration - style.duration
    assert style.speech_share > 0.7
    np.testing.assert_array_equal(style.frames, np.arange(STYLE_FRAMES) + round(style.start * FPS))

    # A ComfyUI IMAGE batch (float 0..1) gives the same style as uint8 frames.
    image = torch.from_numpy(frames).float() / 255.0
    same = encode_style_reference(style_model, whisper_encoder, image, audio, FPS)
    torch.testing.assert_close(same.tokens, style.tokens, rtol=0, atol=0)

    # At another frame rate the reference is resampled to the model's 25 fps: 5 fps frames show five times.
    slow = encode_style_reference(style_model, whisper_encoder, frames[::5], audio, FPS / 5)
    assert slow.tokens.shape == style.tokens.shape and slow.fps == FPS / 5
    assert (np.bincount(slow.frames)[np.unique(slow.frames)[1:-1]] == 5).all()


def test_a_given_face_track_replaces_mediapipe(style_model, whisper_encoder, reference):
    from lipsync_core.face import track_faces

    frames, audio = reference
    track = track_faces(iter(frames), fps=FPS)
    grey = np.full_like(frames, 128)
    with pytest.raises(ValueError, match="No face was found in the style reference"):
        encode_style_reference(style_model, whisper_encoder, grey, audio, FPS)
    # The track says where the face is, even where mediapipe sees none.
    style = encode_style_reference(style_model, whisper_encoder, grey, audio, FPS, track=track)
    assert style.tokens.shape[1] == STYLE_FRAMES
    with pytest.raises(ValueError, match="give the track of the reference clip"):
        encode_style_reference(style_model, whisper_encoder, frames[:60], audio, FPS, track=track)


@pytest.mark.parametrize("case", ["too_short", "no_audio", "empty_audio", "silent", "plain_model"])
def test_bad_references_are_clear_errors(case, model_files, style_model, whisper_encoder, reference):
    frames, audio = reference
    loaded, message = style_model, None
    if case == "too_short":  # 1 s of talking; the model was trained on 48 frames at 25 fps
        frames, message = frames[int(LEAD * FPS):][:25], r"1.00 s long \(25 frames at 25 fps\); this model needs " \
            r"at least 1.92 s of the speaker talking \(48 frames at its 25 fps\)"
    elif case == "no_audio":
        audio, message = None, "has no sound: it needs the speaker talking"
    elif case == "empty_audio":
        audio, message = Audio(torch.zeros(0), 16000), "has no sound: it needs the speaker talking"
    elif case == "silent":
        audio, message = Audio.silence(audio.num_samples), "silent .* needs the speaker talking"
    else:
        loaded, message = inference.load_model(model_files["plain"]), "has no speaking-style input"
    with pytest.raises(ValueError, match=message):
        encode_style_reference(loaded, whisper_encoder, frames, audio, FPS)


def test_a_style_is_only_for_the_model_that_encoded_it(model_files, style_model, whisper_encoder, reference):
    style = encode_style_reference(style_model, whisper_encoder, *reference, FPS)
    plain = inference.load_model(model_files["plain"])
    with pytest.raises(ValueError, match="has no speaking-style input"):
        style.for_model(plain.model)
    narrow = StyleReference(style.tokens[..., :16], style.frames, style.fps, style.start, style.duration, 1.0)
    with pytest.raises(ValueError, match="encoded by another model"):
        narrow.for_model(style_model.model)


@pytest.fixture
def captured(monkeypatch):
    """The frames ``lipsync_file`` hands to the real encoder (the pixels before compression)."""
    from lipsync_core.media import VideoWriter

    frames = []
    write = VideoWriter.write

    def keep(self, frame):
        frames.append(frame.copy())
        write(self, frame)

    monkeypatch.setattr(VideoWriter, "write", keep)
    return frames


def test_style_steers_the_sampler_and_strength_zero_is_no_style(tmp_path, style_model, whisper_encoder, reference,
                                                                speech_wav, captured):
    from lipsync_core.streaming import lipsync_file
    from tests.support.media import write_clip

    style = encode_style_reference(style_model, whisper_encoder, *reference, FPS)
    target = reference[0][:8]  # 2 s at 4 fps
    speech = inference.load_audio(speech_wav, duration=2.0)
    options = inference.SamplerOptions(steps=2, window=4, overlap=1, decode_chunk=4, seed=5)
    video = torch.from_numpy(target).float() / 255.0

    def dub(**style_args):
        frames, _audio, mask = inference.lipsync(video, 4.0, speech, style_model, whisper_encoder, options,
                                                 fit_mode="cut", **style_args)
        return inference.frames_to_uint8(frames), mask.numpy() > 0.5

    plain, mask = dub()
    styled, _ = dub(style=style)
    none, _ = dub(style=style, style_strength=0.0)
    np.testing.assert_array_equal(none, plain)  # strength 0 is no style, bit for bit
    changed = np.abs(styled.astype(int) - plain.astype(int)).max(axis=-1)
    assert changed[mask].mean() > 1.0  # the style changed the mouth region...
    assert (changed[~mask] == 0).mean() > 0.9  # ...and little else (paste-back feathering aside)

    # The streaming path (Lip Sync Video, `run`) takes the style the same way.
    clip = write_clip(tmp_path / "target.mkv", target, 4)
    lipsync_file(clip, speech, tmp_path / "out.mp4", style_model, whisper_encoder, options, fit_mode="cut",
                 style=style)
    np.testing.assert_array_equal(np.stack(captured), styled)


def run(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lipsync_core", "run", *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_run_style_video_refusals(tmp_path, model_files, reference, speech_wav, whisper_tiny_dir):
    from tests.support.media import write_clip

    frames, audio = reference
    target = write_clip(tmp_path / "target.mkv", frames[:8], 4)
    talking = tmp_path / "talking.mp4"
    inference.write_video(talking, torch.from_numpy(frames).float() / 255.0, FPS, audio)
    mute = write_clip(tmp_path / "mute.mkv", frames, FPS)  # no sound at all
    common = ["--video", target, "--audio", speech_wav, "--audio-duration", "2", "--whisper", whisper_tiny_dir,
              "--steps", "1", "--window", "4", "--overlap", "1"]
    cases = [(model_files["plain"], talking, "has no speaking-style input"),
             (model_files["style"], mute, "needs the speaker talking"),
             (model_files["style"], tmp_path / "missing.mp4", "missing.mp4")]
    for model, style_video, words in cases:
        done = run(*common, "--model", model, "--style-video", style_video, "-o", tmp_path / "out.mp4")
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert words in done.stderr, done.stderr[-3000:]
        assert not (tmp_path / "out.mp4").exists()


@pytest.mark.slow  # a whole run (about a minute on the shared CI machine); the refusals above stay fast
def test_run_style_video_dubs_with_the_speakers_style(tmp_path, model_files, reference, speech_wav,
                                                      whisper_tiny_dir):
    from tests.support.media import probe, write_clip

    frames, audio = reference
    target = write_clip(tmp_path / "target.mkv", frames[:8], 4)
    talking = tmp_path / "talking.mp4"
    inference.write_video(talking, torch.from_numpy(frames).float() / 255.0, FPS, audio)
    outputs = {}
    for strength in ("1", "0"):
        output = tmp_path / f"out-{strength}.mp4"
        done = run("--video", target, "--audio", speech_wav, "--audio-duration", "2", "--whisper", whisper_tiny_dir,
                   "--model", model_files["style"], "--steps", "1", "--window", "4", "--overlap", "1",
                   "--crf", "0", "--style-video", talking, "--style-strength", strength, "-o", output)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[strength] = probe(output)
    assert outputs["1"]["frames"] == 8
    assert not np.array_equal(outputs["1"]["pixels"], outputs["0"]["pixels"])
