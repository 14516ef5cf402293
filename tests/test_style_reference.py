"""The speaking-style reference from a clip to the sampler: ``lipsync_core.style``, the style in
``dubbing.lipsync`` / ``streaming.lipsync_file``, and ``run --style-video``.

The reference is the real portrait (mediapipe tracks it) with espeak-ng speech after 1.5 s of silence; the
model is the shipped toy model with a style encoder whose output layer is live (tests/support/style.py).
Model-level behaviour (a fresh encoder changes nothing, ...) is tested with the model core.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsync_core import inference
from lipsync_core.audio import Audio
from lipsync_core.checkpoint import load
from lipsync_core.dubbing import lipsync
from lipsync_core.plan import SamplerOptions
from lipsync_core.style import StyleReference, encode_style_reference
from tests.support.style import STYLE_FRAMES, write_plain_model, write_style_model

REPO = Path(__file__).resolve().parents[1]
FPS = 25.0
LEAD = 1.5  # seconds of silence before the speech


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("style_models")
    return {"style": write_style_model(folder / "style.safetensors"),
            "motion_only": write_style_model(folder / "motion_only.safetensors", tokens=False),
            "plain": write_plain_model(folder / "plain.safetensors")}


@pytest.fixture(scope="module")
def style_model(model_files):
    return load(model_files["style"])


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
        loaded, message = load(model_files["plain"]), "has no speaking-style input"
    with pytest.raises(ValueError, match=message):
        encode_style_reference(loaded, whisper_encoder, frames, audio, FPS)


def test_a_style_is_only_for_the_model_that_encoded_it(model_files, style_model, whisper_encoder, reference):
    style = encode_style_reference(style_model, whisper_encoder, *reference, FPS)
    plain = load(model_files["plain"])
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


DUB_OPTIONS = SamplerOptions(steps=2, window=4, overlap=1, decode_chunk=4, seed=5)


def _dub(loaded, whisper, frames: np.ndarray, speech, style_strength: float = 1.0, **args):
    """``dubbing.lipsync`` of uint8 frames at 4 fps: the output frames (uint8) and where the mask is."""
    video = torch.from_numpy(frames).float() / 255.0
    options = dataclasses.replace(DUB_OPTIONS, style_strength=style_strength)
    out, _audio, mask = lipsync(video, 4.0, speech, loaded, whisper, options, fit_mode="cut", **args)
    return inference.frames_to_uint8(out), mask.numpy() > 0.5


def test_style_steers_the_sampler_and_strength_zero_is_no_style(tmp_path, style_model, whisper_encoder, reference,
                                                                speech_wav, captured):
    from lipsync_core.streaming import lipsync_file
    from tests.support.media import write_clip

    style = encode_style_reference(style_model, whisper_encoder, *reference, FPS)
    target = reference[0][:8]  # 2 s at 4 fps
    speech = inference.load_audio(speech_wav, duration=2.0)

    def dub(**style_args):
        return _dub(style_model, whisper_encoder, target, speech, **style_args)

    plain, mask = dub()
    styled, _ = dub(style=style)
    none, _ = dub(style=style, style_strength=0.0)
    np.testing.assert_array_equal(none, plain)  # strength 0 is no style, bit for bit
    changed = np.abs(styled.astype(int) - plain.astype(int)).max(axis=-1)
    assert changed[mask].mean() > 1.0  # the style changed the mouth region...
    assert (changed[~mask] == 0).mean() > 0.9  # ...and little else (paste-back feathering aside)

    # The streaming path (Lip Sync Video, `run`) takes the style the same way.
    clip = write_clip(tmp_path / "target.mkv", target, 4)
    lipsync_file(clip, speech, tmp_path / "out.mp4", style_model, whisper_encoder, DUB_OPTIONS, fit_mode="cut",
                 style=style)
    np.testing.assert_array_equal(np.stack(captured), styled)


def test_the_files_style_audio_guidance_applies_while_a_style_is_given(tmp_path, style_model, whisper_encoder,
                                                                      reference, speech_wav, captured, monkeypatch):
    from lipsync_core.streaming import lipsync_file
    from tests.support.media import write_clip

    style = encode_style_reference(style_model, whisper_encoder, *reference, FPS)
    target = reference[0][:8]
    speech = inference.load_audio(speech_wav, duration=2.0)
    video = torch.from_numpy(target).float() / 255.0

    def dub(options=DUB_OPTIONS, style_strength: float = 1.0, **style_args) -> np.ndarray:
        options = dataclasses.replace(options, style_strength=style_strength)
        out, _audio, _mask = lipsync(video, 4.0, speech, style_model, whisper_encoder, options, fit_mode="cut",
                                     **style_args)
        return inference.frames_to_uint8(out)

    def file_says(value: float | None) -> None:
        monkeypatch.setattr(style_model.model, "defaults",
                            dataclasses.replace(file_defaults, style_audio_guidance=value))

    file_defaults = style_model.defaults
    file_says(None)
    plain, styled = dub(), dub(style=style)
    by_hand = dub(dataclasses.replace(DUB_OPTIONS, audio_guidance=0.5), style=style)
    assert np.abs(by_hand.astype(int) - styled.astype(int)).max() > 0  # the setting changes a styled dub
    file_says(0.5)
    np.testing.assert_array_equal(dub(style=style), by_hand)  # auto takes the file's style value...
    np.testing.assert_array_equal(dub(), plain)  # ...only while a style is given
    np.testing.assert_array_equal(dub(style=style, style_strength=0.0), plain)  # strength 0: no style
    clip = write_clip(tmp_path / "target.mkv", target, 4)
    lipsync_file(clip, speech, tmp_path / "out.mp4", style_model, whisper_encoder, DUB_OPTIONS, fit_mode="cut",
                 style=style)
    np.testing.assert_array_equal(np.stack(captured), by_hand)  # the streaming path alike


def test_a_style_moves_the_mouth_through_the_motion_input(model_files, whisper_encoder, reference, speech_wav):
    """With its tokens silenced, a style still steers a model with a mouth-motion input: the motion its encoder
    predicts for the new speech, scaled by the reference's lip gain, is the motion condition; strength weighs
    it; an explicit motion replaces it."""
    from lipsync_core.motion import MouthMotion, in_rest_widths, mouth_opening, mouth_width, render_motion
    from lipsync_core.style import LIP_GAIN_RANGE, calibrate_lips, predict_lips, style_condition, style_motion

    loaded = load(model_files["motion_only"])
    style = encode_style_reference(loaded, whisper_encoder, *reference, FPS)
    assert style.rest.shape == (40, 2) and 0.1 < mouth_width(style.rest) < 0.6  # the speaker's mouth, crop units
    speech = inference.load_audio(speech_wav, duration=2.0)  # 2 s: 8 frames at 4 fps
    features = inference.whisper_features(whisper_encoder, speech, fps=4.0, frame_count=8,
                                          window=loaded.defaults.feature_window)
    from lipsync_core.configs import vae_scale_factor

    window, latent = loaded.defaults.window, loaded.defaults.crop_size // vae_scale_factor(loaded.vae)
    motion = style_motion(style, loaded.model, features, 4.0, window)
    assert motion.num_frames == 8 and motion.fps == 4.0
    np.testing.assert_array_equal(motion.rest, style.rest)  # drawn around the reference's mouth
    assert (motion.opening() - mouth_opening(style.rest)).max() > 0.01  # the speech opens it
    condition = style_condition(style, loaded.model, features, 4.0, window, latent)
    np.testing.assert_array_equal(condition.numpy(), render_motion(motion, latent))
    torch.testing.assert_close(style_condition(style, loaded.model, features, 4.0, window, latent, 0.5),
                               condition * 0.5)
    assert style_condition(style, loaded.model, features, 4.0, window, latent, 0.0) is None
    assert style_condition(None, loaded.model, features, 4.0, window, latent) is None

    # The reference's lips set how far the predicted motion goes (calibrate_lips, fitted at encoding).
    assert style.lip_gain.shape == (40, 2) and np.isfinite(style.lip_gain).all()
    predicted = predict_lips(loaded.model, style.tokens, features, window)
    np.testing.assert_allclose(calibrate_lips(loaded.model, style.tokens, features, predicted, window), 1.0,
                               atol=1e-5)  # lips as predicted: gain 1
    gain = calibrate_lips(loaded.model, style.tokens, features, predicted * 2, window)
    assert (gain > 1).all() and (gain <= 2).all()  # pulled toward 1, the more the less a coordinate moves
    assert gain.flat[np.argmax((predicted**2).sum(axis=0))] > 1.8
    shut_lips = calibrate_lips(loaded.model, style.tokens, features, predicted * 0, window)
    assert (shut_lips < 1).all() and shut_lips.flat[np.argmax((predicted**2).sum(axis=0))] == LIP_GAIN_RANGE[0]
    unscaled = style_motion(dataclasses.replace(style, lip_gain=None), loaded.model, features, 4.0, window)
    np.testing.assert_allclose(in_rest_widths(motion.points, style.rest),
                               in_rest_widths(unscaled.points, style.rest) * style.lip_gain, atol=1e-6)

    def dub(**args):
        return _dub(loaded, whisper_encoder, reference[0][:8], speech, **args)

    plain, mask = dub()
    styled, _ = dub(style=style)
    assert np.abs(styled.astype(int) - plain.astype(int)).max(axis=-1)[mask].mean() > 1.0
    shut = MouthMotion(np.repeat(style.rest[None], 8, axis=0), 4.0)
    np.testing.assert_array_equal(dub(motion=shut, style=style)[0], dub(motion=shut)[0])

    # Where the face being edited is tracked (lipsync, lipsync_file), the style's motion is drawn around that
    # face's resting mouth, as an explicit motion is (motion.target_motion): the reference's own does not count.
    from lipsync_core.motion import retarget

    elsewhere = dataclasses.replace(style, rest=style.rest * 1.2 + 0.03)  # a wider mouth, placed lower
    assert not torch.equal(style_condition(elsewhere, loaded.model, features, 4.0, window, latent), condition)
    np.testing.assert_array_equal(dub(style=elsewhere)[0], styled)
    moved = style_motion(elsewhere.on_mouth(style.rest), loaded.model, features, 4.0, window)
    np.testing.assert_allclose(moved.points, retarget(style_motion(elsewhere, loaded.model, features, 4.0, window),
                                                      style.rest).points, atol=1e-6)


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
