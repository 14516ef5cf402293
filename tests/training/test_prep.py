"""`prep`: real video files (astronaut portrait + espeak speech) -> shards; bad videos are skipped with a reason."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from lipsync_core.audio import load_audio
from lipsync_core.training.dataset import LipSyncWindows
from lipsync_core.training.prep import PrepConfig, clip_starts, prepare_dataset, read_video
from lipsync_core.training.shards import ShardIndex, read_clip


def _write_video(path, frames: np.ndarray, fps: int, audio: np.ndarray | None = None) -> None:
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=16000)
            sound.layout = "mono"
        for image in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            samples = audio.astype(np.float32)[None]
            for start in range(0, samples.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]), format="fltp",
                                                   layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = 16000, start, Fraction(1, 16000)
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory, astronaut, speech_wav):
    folder = tmp_path_factory.mktemp("videos")
    speech = load_audio(speech_wav).waveform.numpy()
    face = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    count = int(len(speech) / 16000 * 30)  # 30 fps source, resampled to 25 by prep
    frames = np.stack([np.roll(face, (int(2 * np.sin(i / 5)), int(2 * np.cos(i / 7))), (0, 1)) for i in range(count)])
    _write_video(folder / "talking.mp4", frames, 30, speech)
    _write_video(folder / "silent_film.mp4", frames[:30], 30, None)
    noise = np.random.default_rng(0).integers(0, 255, (30, 128, 128, 3), dtype=np.uint8)
    _write_video(folder / "no_face.mp4", noise, 25, speech[:16000])
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(1).bytes(5000))
    return folder, count


def test_prep_writes_shards_and_reports_bad_videos(video_folder, whisper_tiny_dir, tmp_path):
    folder, source_frames = video_folder
    output = tmp_path / "shards"
    config = PrepConfig(input=str(folder), output=str(output), whisper=str(whisper_tiny_dir), fps=25.0,
                        crop_size=64, clip_frames=16)
    report = prepare_dataset(config, progress=False)

    skipped = {entry["video"]: entry["error"] for entry in report["skipped"]}
    assert set(skipped) == {"silent_film.mp4", "no_face.mp4", "corrupt.mp4"}
    assert skipped["silent_film.mp4"] == "no audio"
    assert "no face" in skipped["no_face.mp4"].lower()
    assert "cannot open" in skipped["corrupt.mp4"] or "corrupt" in skipped["corrupt.mp4"]
    assert [entry["video"] for entry in report["prepared"]] == ["talking.mp4"]

    # 30 fps -> 25 fps, cut into fixed 16-frame clips.
    frames_25 = int(source_frames / 30 * 25)
    assert report["prepared"][0]["frames"] == frames_25
    index = ShardIndex.scan(output)
    assert len(index.entries) == frames_25 // 16 and all(entry[2] == 16 for entry in index.entries)
    clip = read_clip(*index.entries[0][:2])
    assert clip["frames"].shape == (16, 64, 64, 3) and clip["whisper"].shape == (16, 5, 10, 384)
    # How the crops and masks were made travels with each clip (training writes it into the model).
    info = index.entries[0][3]
    assert (info["crop_size"], info["upper_edge"], info["mask_hold"]) == (64, "nose", 0.5)
    mask = clip["mask"].float() / 255
    assert 0.05 < mask.mean() < 0.6  # the lower face, not the whole crop
    lips = clip["landmarks"][:, 13].numpy()  # upper inner lip inside the mask, in crop pixels
    assert all(mask[t, int(round(y)), int(round(x))] > 0.9 for t, (x, y) in enumerate(lips))

    # Resumable: a second run redoes nothing.
    stamp = (output / "talking.safetensors").stat().st_mtime_ns
    again = prepare_dataset(config, progress=False)
    assert (output / "talking.safetensors").stat().st_mtime_ns == stamp
    assert len(again["prepared"]) == 1 and len(again["skipped"]) == 3
    # The training dataset reads them.
    assert len(LipSyncWindows(output, num_frames=8)) == 3 * len(index.entries)  # starts 0, 4, 8 per clip
    assert json.loads((output / "prep_report.json").read_text())["config"]["crop_size"] == 64


def test_fps_resampling_and_clip_cutting(tmp_path):
    frames = np.stack([np.full((16, 16, 3), i, np.uint8) for i in range(60)])  # 2 s at 30 fps
    _write_video(tmp_path / "count.mp4", frames, 30)
    video = read_video(tmp_path / "count.mp4", 25.0)
    assert len(video) == 50
    shown = video[:, 8, 8, 0].astype(int)
    expected = np.floor((np.arange(50) + 0.5) / 25 * 30).astype(int)
    assert np.abs(shown - expected).max() <= 2  # h264 rounding of flat grey levels
    usable = np.ones(40, bool)
    usable[10] = False
    assert clip_starts(usable, 8, 8) == [0, 11, 19, 27]  # none crosses the faceless frame 10
    assert clip_starts(np.ones(16, bool), 8, 4) == [0, 4, 8]
