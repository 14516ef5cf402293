"""The streaming file-to-file path (``lipsync_core.streaming``): the same frames as the in-memory path,
exact lengths and rates, untouched pixels where nothing is edited, clear errors, nothing half-written."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from lipsync_core import inference
from lipsync_core.audio import Audio
from lipsync_core.checkpoint import load
from lipsync_core.dubbing import lipsync
from lipsync_core.media import VideoInfo, VideoReader, VideoWriter
from lipsync_core.plan import FaceOptions, SamplerOptions
from lipsync_core.streaming import SpilledFrames, StreamSettings, frame_buffer, lipsync_file

TOY_MODEL = Path(__file__).resolve().parents[1] / "lipsync_core" / "toy" / "assets" / "toy_sayanything.safetensors"
NO_FACE = range(9, 12)


def _clip(
    astronaut,
    path: Path,
    frames: int,
    fps: Fraction,
    size=(333, 257),
    leave_at: int | None = None,
    pix_fmt: str = "yuv420p",
    rotation: int = 0,
) -> Path:
    """The real portrait drifting across an odd-sized frame; frames 9-11 show no face (grey); from
    ``leave_at`` on it slides out of the frame to the right, 40 px a frame."""
    width, height = size
    face = cv2.resize(astronaut, (200, 200), interpolation=cv2.INTER_AREA)
    like = VideoInfo(str(path), width, height, fps, pix_fmt, rotation=rotation)
    with VideoWriter(path, like, fps, crf=12, preset="ultrafast") as w:
        for index in range(frames):
            frame = np.full((height, width, 3), 128, np.uint8)
            if index not in NO_FACE:
                x, y = 40 + (index % 7) * 5, 30 + (index % 5) * 3
                if leave_at is not None and index >= leave_at:
                    x += 40 * (index - leave_at + 1)
                visible = max(0, min(200, width - x))
                frame[y : y + 200, x : x + visible] = face[:, :visible]
            w.write(frame)
        w.close()
    return path


@pytest.fixture(scope="module")
def toy():
    return load(TOY_MODEL)


@pytest.fixture
def captured(monkeypatch):
    """The frames handed to the real encoder (the pixels before compression)."""
    frames = []
    write = VideoWriter.write

    def keep(self, frame):
        frames.append(frame.copy())
        write(self, frame)

    monkeypatch.setattr(VideoWriter, "write", keep)
    return frames


def test_streaming_gives_the_in_memory_frames(tmp_path, astronaut, speech_wav, whisper_encoder, toy, captured):
    fps = Fraction(30000, 1001)
    clip = _clip(astronaut, tmp_path / "clip.mp4", 23, fps)
    captured.clear()
    speech = inference.load_audio(speech_wav)
    options = SamplerOptions(steps=2, seed=3, decode_chunk=5)
    out = lipsync_file(
        clip,
        speech,
        tmp_path / "out.mp4",
        toy,
        whisper_encoder,
        options,
        fit_mode="pad_silence",
        settings=StreamSettings(spill_bytes=1),
    )  # every buffer spilled to disk
    assert Path(out).is_file()

    frames, read_fps = inference.read_frames(clip)
    expected, _audio, _mask = lipsync(
        frames, read_fps, speech, toy, whisper_encoder, options, fit_mode="pad_silence"
    )
    assert len(captured) == 23
    np.testing.assert_array_equal(np.stack(captured), inference.frames_to_uint8(expected))
    with av.open(out) as container:
        assert Fraction(container.streams.video[0].average_rate) == fps
    # Frames without a face pass through exactly; the others were edited.
    source = inference.frames_to_uint8(frames)
    for index in range(23):
        same = np.array_equal(captured[index], source[index])
        assert same == (index in NO_FACE), index


def test_streaming_with_a_mouth_motion_gives_the_in_memory_frames(tmp_path, astronaut, speech_wav, whisper_encoder,
                                                                 captured):
    """The Lip Sync Video node's path (lipsync_file) and the in-memory one agree with a motion too, also with
    motion guidance, and the motion and its guidance change the frames (a model with a motion input:
    tests.support.motion)."""
    import shutil

    from lipsync_core.face import track_faces
    from lipsync_core.motion import motion_from_track
    from tests.support.motion import motion_model
    from tools.demo_assets import drop_jaw

    shutil.copy(TOY_MODEL, tmp_path / "toy.safetensors")
    loaded = load(motion_model(tmp_path / "toy.safetensors"))
    fps = 25
    clip = _clip(astronaut, tmp_path / "clip.mp4", 12, Fraction(fps))
    landmarks = track_faces([astronaut], smoothing=None).landmarks[0]
    driving = np.stack([drop_jaw(astronaut, landmarks, 12 * abs(np.sin(i / 2))) for i in range(12)])
    motion = motion_from_track(track_faces(driving, fps=fps), fps)
    speech = inference.load_audio(speech_wav)
    options = SamplerOptions(steps=2, seed=3, decode_chunk=4, motion_guidance=1.0)
    pushed = dataclasses.replace(options, motion_guidance=3.0)
    runs = {}
    for name, given, settings in (("motion", motion, options), ("none", None, options), ("pushed", motion, pushed)):
        captured.clear()
        lipsync_file(clip, speech, tmp_path / f"{name}.mp4", loaded, whisper_encoder, settings, fit_mode="cut",
                     motion=given)
        runs[name] = np.stack(captured)
    frames, read_fps = inference.read_frames(clip)
    for name, settings in (("motion", options), ("pushed", pushed)):
        expected, _audio, _mask = lipsync(frames, read_fps, speech, loaded, whisper_encoder, settings,
                                                    fit_mode="cut", motion=motion)
        np.testing.assert_array_equal(runs[name], inference.frames_to_uint8(expected))
    assert np.abs(runs["motion"].astype(int) - runs["none"].astype(int)).max() > 10
    assert np.abs(runs["pushed"].astype(int) - runs["motion"].astype(int)).max() > 10


def test_long_clip_keeps_exact_length_rate_size_and_audio(
    tmp_path, astronaut, speech_wav, whisper_encoder, toy, captured
):
    # 2.3 s of speech looped over a 61-frame clip at 25 fps: many 8-frame windows, a length that is a
    # multiple of nothing; the output is as long as the speech, at the source's size and rate. From
    # frame 52 the face slides out of the frame; once it is gone the frames pass through untouched.
    fps = Fraction(25)
    clip = _clip(astronaut, tmp_path / "clip.mp4", 61, fps, leave_at=52)
    captured.clear()
    speech = inference.load_audio(speech_wav)
    seconds = speech.num_samples / speech.sample_rate * 1.0
    long_speech = Audio(speech.waveform.repeat(2), speech.sample_rate)  # 4.6 s -> 115 frames
    stages = []
    out = lipsync_file(
        clip,
        long_speech,
        tmp_path / "out.mp4",
        toy,
        whisper_encoder,
        SamplerOptions(steps=1),
        fit_mode="loop",
        progress=lambda stage, done, total: stages.append(stage),
    )
    expected_frames = round(2 * seconds * 25)
    with av.open(out) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert Fraction(video.average_rate) == fps
        assert (video.width, video.height) == (333, 257)  # odd sizes come back exactly
        decoded = sum(1 for _ in container.decode(video))
    with av.open(out) as container:
        samples = sum(f.samples for f in container.decode(container.streams.audio[0]))
    assert decoded == len(captured) == expected_frames
    assert samples / audio.sample_rate == pytest.approx(expected_frames / 25, abs=0.03)
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == [
        "tracking",
        "audio features",
        "canvas",
        "denoising",
        "writing",
    ]
    # The loop shows source frame 61 + k again at output frame k: no-face frames stay untouched there too.
    looped = list(VideoReader(clip).frames(np.arange(expected_frames) % 61))
    gone = [k for k in range(52, 61) if 40 + (k % 7) * 5 + 40 * (k - 51) >= 333]
    assert gone
    for index in range(expected_frames):
        if index % 61 in NO_FACE or index % 61 in gone:
            np.testing.assert_array_equal(captured[index], looped[index])


def test_a_given_track_replaces_mediapipe_and_must_fit_the_video(tmp_path, astronaut, speech_wav, whisper_encoder,
                                                                  toy, captured):
    from lipsync_core.face import track_faces

    clip = _clip(astronaut, tmp_path / "clip.mp4", 12, Fraction(25))
    speech = inference.load_audio(speech_wav)
    options = SamplerOptions(steps=1)
    lipsync_file(clip, speech, tmp_path / "a.mp4", toy, whisper_encoder, options, fit_mode="cut")
    tracked = [frame.copy() for frame in captured]
    captured.clear()
    track = track_faces(VideoReader(clip), fps=25.0)
    track.found[4] = False  # another tracker's verdict: that frame is left alone
    lipsync_file(clip, speech, tmp_path / "b.mp4", toy, whisper_encoder, options, fit_mode="cut", track=track)
    source = list(VideoReader(clip))
    np.testing.assert_array_equal(captured[4], source[4])
    assert not np.array_equal(tracked[4], source[4])
    with pytest.raises(ValueError, match="face track has 11 frames"):
        lipsync_file(clip, speech, tmp_path / "c.mp4", toy, whisper_encoder, options, track=track.select(range(11)))


def test_output_keeps_the_source_pixel_format_and_rotation(tmp_path, astronaut, speech_wav, whisper_encoder, toy):
    clip = _clip(astronaut, tmp_path / "clip.mp4", 12, Fraction(25), size=(320, 256), pix_fmt="yuv444p", rotation=90)
    out = lipsync_file(
        clip,
        inference.load_audio(speech_wav),
        tmp_path / "out.mp4",
        toy,
        whisper_encoder,
        SamplerOptions(steps=1),
        fit_mode="cut",
    )
    with av.open(out) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv444p"
        assert next(container.decode(stream)).rotation == 90


def test_a_cancelled_run_leaves_no_file(tmp_path, astronaut, speech_wav, whisper_encoder, toy):
    clip = _clip(astronaut, tmp_path / "clip.mp4", 20, Fraction(25))

    class Cancelled(Exception):
        pass

    def cancel(stage, done, total):
        if stage == "writing":
            raise Cancelled

    with pytest.raises(Cancelled):
        lipsync_file(
            clip,
            inference.load_audio(speech_wav),
            tmp_path / "out.mp4",
            toy,
            whisper_encoder,
            SamplerOptions(steps=1),
            progress=cancel,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_damaged_videos_get_one_clear_error(tmp_path, astronaut, speech_wav, whisper_encoder, toy):
    clip = _clip(astronaut, tmp_path / "clip.mp4", 20, Fraction(25))
    data = clip.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    for bad in (truncated, garbage, tmp_path / "missing.mp4"):
        with pytest.raises(ValueError, match="video|Video"):
            lipsync_file(bad, inference.load_audio(speech_wav), tmp_path / "out.mp4", toy, whisper_encoder)
    assert not (tmp_path / "out.mp4").exists()


def test_spilled_buffers_read_back_what_was_written(tmp_path):
    buffer = frame_buffer((10, 2, 3), spill_bytes=16, directory=str(tmp_path))
    assert isinstance(buffer, SpilledFrames) and list(tmp_path.iterdir()) == []  # unlinked at once
    values = torch.arange(60, dtype=torch.float32).reshape(10, 2, 3)
    buffer[2:5] = values[2:5]
    buffer[7] = values[7]
    assert torch.equal(buffer[2:5], values[2:5]) and torch.equal(buffer[7], values[7])
    assert torch.count_nonzero(buffer[0:2]) == 0 and buffer[:].shape == (10, 2, 3)
    assert isinstance(frame_buffer((4, 2), spill_bytes=1 << 20), torch.Tensor)


def test_the_users_mask_holds_still_while_the_source_jaw_talks(astronaut):
    # The real portrait's landmarks with the jaw and lower lip dropped and raised every 10 frames (a
    # talking source). A per-frame mask follows the jaw; the mask of the user's path (face node, `run`,
    # streaming: inference.face_mask, held 0.5 s) warped into the crop must not.
    from lipsync_core.face import FaceTrack, detect_landmarks
    from lipsync_core.face.track import LIPS_INNER, LIPS_OUTER, LOWER_JAW, face_size

    points = detect_landmarks(astronaut)
    assert points is not None
    frames = 60
    opening = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frames) / 10)
    lower = sorted(set(LOWER_JAW[3:-3]) | {p for p in LIPS_OUTER + LIPS_INNER if points[p, 1] > points[14, 1]})
    landmarks = np.repeat(points[None], frames, axis=0).astype(np.float32)
    landmarks[:, lower, 1] += (0.12 * float(face_size(points)) * opening)[:, None]
    track = FaceTrack(landmarks, np.ones(frames, bool), astronaut.shape[:2])
    video = torch.from_numpy(astronaut).float().div(255).expand(frames, *astronaut.shape)

    def crop_masks(hold: float):
        mask = inference.face_mask(track, 25.0, FaceOptions(mask_hold=hold))
        return inference.crop_faces(video, mask, track, crop_size=128)[1].numpy()

    def top_rows(masks):
        return np.array([np.flatnonzero((m > 0.5).any(axis=1))[0] for m in masks])

    follows, held = crop_masks(0.0), crop_masks(0.5)
    core = slice(15, 45)  # frames whose whole hold window is inside the clip
    assert np.corrcoef(follows.sum((1, 2))[core], opening[core])[0, 1] > 0.9  # the jaw shows in a per-frame mask
    area = held.sum((1, 2))[core]
    assert area.std() / area.mean() < 0.01 and np.ptp(top_rows(held[core])) == 0
    assert (held[core] >= follows[core] - 1e-3).all()  # it covers the mouth at every opening
