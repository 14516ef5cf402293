"""Bad and unusual inputs through ``python -m lipsync_core run``, the command users run on files.

Each case is a row of the bad-input table in docs/RELIABILITY.md: either the run succeeds with the
right frames, size, rate and sound, or it exits with status 2 and a message that says what is wrong
(never a traceback). Clips are lossless FFV1 (any size) of the real astronaut portrait at 4 fps; the
model is the shipped toy model (VAE inside), 1 step, 64 px crops.
"""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from lipsync_core.audio import Audio, save_wav
from tests.support.media import probe, write_clip
from tools.demo_assets import install_default_model

REPO = Path(__file__).resolve().parents[1]
FAST = ["--steps", "1", "--window", "4", "--overlap", "1", "--crop-size", "64", "--decode-chunk", "4"]
FPS = 4


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return install_default_model(tmp_path_factory.mktemp("models"))


@pytest.fixture
def lipsync(tmp_path, model, speech_wav, whisper_tiny_dir):
    """``lipsync(video, audio=speech, *options) -> (CompletedProcess, output path)``."""

    def run(video: Path, audio: Path | None = None, *options: str, model_file: Path = model,
            whisper: Path = whisper_tiny_dir):
        output = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}.mp4"
        command = [sys.executable, "-m", "lipsync_core", "run", "--video", video, "--audio", audio or speech_wav,
                   "--model", model_file, "--whisper", whisper, "-o", output, *FAST, *options]
        done = subprocess.run([str(part) for part in command], cwd=REPO, capture_output=True, text=True,
                              timeout=600)
        return done, output

    return run


def assert_refused(done: subprocess.CompletedProcess, *words: str) -> None:
    """Exit status 2 with a one-paragraph message naming ``words``, and no traceback."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    for word in words:
        assert word.lower() in done.stderr.lower(), done.stderr[-3000:]


def assert_ran(done: subprocess.CompletedProcess, output: Path) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return probe(output)


def portrait_clip(astronaut, frames: int) -> np.ndarray:
    """The portrait drifting sideways (so each frame differs), ``frames`` long."""
    return np.stack([np.roll(astronaut, 2 * i, axis=1) for i in range(frames)])


def test_face_lost_midway_passes_those_frames_through(tmp_path, lipsync, astronaut):
    frames = portrait_clip(astronaut, 8)
    frames[4:] = 128  # the face leaves the picture
    done, output = lipsync(write_clip(tmp_path / "lost.mkv", frames, FPS), None, "--audio-duration", "2")
    info = assert_ran(done, output)
    assert info["frames"] == 8
    # Frames without a face come back as they were (up to h264's rounding of a flat grey).
    assert np.abs(info["pixels"][4:].astype(int) - 128).mean() < 2
    assert np.abs(info["pixels"][:4].astype(int) - frames[:4]).mean() < 12  # the rest only edited at the mouth


def test_side_face_is_edited_or_passed_through(tmp_path, lipsync, astronaut):
    # A head turned far to the side, approximated by foreshortening the face to 45 % of its width.
    squeezed = cv2.resize(astronaut, (230, 512), interpolation=cv2.INTER_AREA)
    frame = np.full_like(astronaut, 128)
    frame[:, 141:371] = squeezed
    done, output = lipsync(write_clip(tmp_path / "side.mkv", portrait_clip(frame, 4), FPS), None,
                           "--audio-duration", "1")
    info = assert_ran(done, output)
    assert info["frames"] == 4 and info["size"] == (512, 512)


def test_tiny_face_is_a_clear_error(tmp_path, lipsync, astronaut):
    # A 32 px portrait (face ~7 px) in a 512 px frame: too small for the landmark model anywhere.
    frame = np.full_like(astronaut, 128)
    frame[240:272, 240:272] = cv2.resize(astronaut, (32, 32), interpolation=cv2.INTER_AREA)
    done, _ = lipsync(write_clip(tmp_path / "tiny.mkv", portrait_clip(frame, 4), FPS), None, "--audio-duration", "1")
    assert_refused(done, "no face")


def test_silent_audio_runs_and_keeps_its_length(tmp_path, lipsync, astronaut):
    silence = save_wav(Audio.silence(2 * 16000), tmp_path / "silence.wav")
    done, output = lipsync(write_clip(tmp_path / "clip.mkv", portrait_clip(astronaut, 8), FPS), silence)
    info = assert_ran(done, output)
    assert info["frames"] == 8
    assert info["audio_seconds"] == pytest.approx(2.0, abs=0.07)


def test_audio_longer_than_the_video(tmp_path, lipsync, astronaut):
    # 1 s of video, 2.3 s of speech: loop (the default) repeats the video to the speech's length; cut and
    # pad_silence keep the video's length (tests/preprocess/test_audio.py::test_fit_modes).
    done, output = lipsync(write_clip(tmp_path / "short.mkv", portrait_clip(astronaut, 4), FPS))
    info = assert_ran(done, output)
    assert abs(info["frames"] - 9) <= 1
    assert info["audio_seconds"] == pytest.approx(info["frames"] / FPS, abs=0.07)


def test_audio_file_without_an_audio_stream(tmp_path, lipsync, astronaut):
    clip = write_clip(tmp_path / "mute.mkv", portrait_clip(astronaut, 4), FPS)
    done, _ = lipsync(clip, clip)
    assert_refused(done, "audio", str(clip))


def test_corrupt_and_truncated_videos(tmp_path, lipsync, astronaut):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 64)
    done, _ = lipsync(garbage)
    assert_refused(done, str(garbage))
    # A real h264 mp4 cut in half (an interrupted download): its index is gone.
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), mode="w") as container:
        stream = container.add_stream("h264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 512, 512, "yuv420p"
        for image in portrait_clip(astronaut, 8):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    done, _ = lipsync(truncated)
    assert_refused(done, str(truncated))


def test_one_frame_video_is_held_like_a_still(tmp_path, lipsync, astronaut):
    done, output = lipsync(write_clip(tmp_path / "one.mkv", astronaut[None], FPS))
    info = assert_ran(done, output)
    assert abs(info["frames"] - 9) <= 1  # 2.3 s of speech at the clip's 4 fps


def test_odd_frame_size_comes_back_exactly(tmp_path, lipsync, astronaut):
    frame = np.full((403, 721, 3), 128, np.uint8)
    frame[:, 104:616] = cv2.resize(astronaut, (512, 403), interpolation=cv2.INTER_AREA)
    done, output = lipsync(write_clip(tmp_path / "odd.mkv", portrait_clip(frame, 4), FPS), None,
                           "--audio-duration", "1")
    info = assert_ran(done, output)
    assert info["size"] == (403, 721)


def test_29_97_fps_keeps_its_exact_rate(tmp_path, lipsync, astronaut):
    ntsc = Fraction(30000, 1001)
    done, output = lipsync(write_clip(tmp_path / "ntsc.mkv", portrait_clip(astronaut, 12), ntsc), None,
                           "--audio-duration", str(float(12 / ntsc)), "--fit", "cut")
    info = assert_ran(done, output)
    assert info["fps"] == ntsc and info["frames"] == 12
    assert info["audio_seconds"] == pytest.approx(float(12 / ntsc), abs=0.05)


def test_whisper_folder_of_the_wrong_kind(tmp_path, lipsync, astronaut, model):
    clip = write_clip(tmp_path / "clip.mkv", portrait_clip(astronaut, 4), FPS)
    # A transformers folder of another model (what a wrong download looks like), then the SayAnything
    # checkpoint given where the Whisper folder belongs.
    other = tmp_path / "bert-base"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 768}))
    done, _ = lipsync(clip, None, whisper=other)
    assert_refused(done, "whisper", str(other))
    done, _ = lipsync(clip, None, whisper=model)
    assert_refused(done, "whisper", str(model))


def test_truncated_and_wrong_model_files(tmp_path, lipsync, astronaut, model):
    clip = write_clip(tmp_path / "clip.mkv", portrait_clip(astronaut, 4), FPS)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    done, _ = lipsync(clip, None, model_file=truncated)
    assert_refused(done, str(truncated), "truncated")
    done, _ = lipsync(clip, None, model_file=tmp_path / "missing.safetensors")
    assert_refused(done, "missing.safetensors")


@pytest.fixture(scope="module")
def motion_model(model) -> Path:
    """The shipped toy model if it has a mouth-motion input, else a copy given one."""
    from tests.support.motion import motion_model as with_motion_input

    return with_motion_input(model)


def _talking_portrait(astronaut, frames: int) -> np.ndarray:
    from lipsync_core.face import track_faces
    from tools.demo_assets import drop_jaw

    landmarks = track_faces([astronaut], smoothing=None).landmarks[0]
    return np.stack([drop_jaw(astronaut, landmarks, 10 * abs(np.sin(i))) for i in range(frames)])


@pytest.mark.slow  # a whole run (about a minute on the shared CI machine); the refusals below stay fast
def test_motion_video_drives_a_model_with_a_motion_input(tmp_path, lipsync, astronaut, motion_model):
    video = write_clip(tmp_path / "target.mkv", portrait_clip(astronaut, 8), FPS)
    driving = write_clip(tmp_path / "driving.mkv", _talking_portrait(astronaut, 8), FPS)
    done, output = lipsync(video, None, "--audio-duration", "2", "--motion-video", driving, "--motion-gain", "1.5",
                           model_file=motion_model)
    assert assert_ran(done, output)["frames"] == 8


def test_motion_video_of_another_length_is_a_clear_error(tmp_path, lipsync, astronaut, motion_model):
    video = write_clip(tmp_path / "target.mkv", portrait_clip(astronaut, 8), FPS)
    short = write_clip(tmp_path / "short.mkv", _talking_portrait(astronaut, 4), FPS)
    done, _ = lipsync(video, None, "--audio-duration", "2", "--motion-video", short, model_file=motion_model)
    assert_refused(done, "mouth motion lasts 1.00 s", "the video has 8 frames")


def test_motion_video_needs_a_model_with_a_motion_input(tmp_path, lipsync, astronaut, model):
    from tests.support.motion import plain_model

    video = write_clip(tmp_path / "target.mkv", portrait_clip(astronaut, 4), FPS)
    driving = write_clip(tmp_path / "driving.mkv", _talking_portrait(astronaut, 4), FPS)
    plain = plain_model(model, tmp_path / "plain.safetensors")  # whatever the shipped model has
    done, _ = lipsync(video, None, "--audio-duration", "1", "--motion-video", driving, model_file=plain)
    assert_refused(done, "has no mouth-motion input")
