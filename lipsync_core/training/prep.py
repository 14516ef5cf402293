"""Data preparation: a folder of talking-head videos -> training shards (ours).

Per video: decode and resample the frames to the training fps, track the face and cut aligned crops
with the adaptive mask (``face.prepare_face_crops``, the same call inference uses), Whisper features
per frame (``audio.WhisperAudioEncoder.frame_features``), optionally cached VAE latents, then cut the
video into fixed-length clips where a face is found in every frame. One shard per video
(``<name>.safetensors``), so an interrupted run resumes where it stopped; bad videos are skipped and
listed with the reason in ``prep_report.json``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..configs import ModelDefaults
from ..tensors import uint8_to_mask, uint8_to_model

DEFAULTS = ModelDefaults()

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


@dataclass
class PrepConfig:
    input: str
    output: str
    whisper: str  # transformers Whisper folder
    fps: float = 25.0
    crop_size: int = 512
    clip_frames: int = 42  # frames per clip: 3 windows of 14 (room for a reference away from the window)
    clip_stride: int | None = None  # default: clip_frames (no overlap)
    vae: str | None = None  # SayAnything checkpoint with a VAE or a single-file SVD: cache latents
    upper_edge: str = DEFAULTS.upper_edge
    mask_hold: float = DEFAULTS.mask_hold  # seconds the crop-space mask holds the jaw's outline (face_masks' hold)
    workers: int = 1
    backend: str = "auto"  # mediapipe backend for landmarks

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.clip_frames < 2 or self.crop_size < 8:
            raise ValueError("fps must be positive, clip_frames at least 2 and crop_size at least 8")


def read_video(path: str | os.PathLike, fps: float) -> np.ndarray:
    """Frames uint8 [T, H, W, 3] resampled to ``fps``: output frame i shows the source frame on screen at
    (i + 0.5) / fps."""
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise ValueError(f"cannot open the file ({error})") from error
    with container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        frames, times = [], []
        try:
            for frame in container.decode(stream):
                if frame.pts is None or frame.time_base is None:
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(float(frame.pts * frame.time_base))
        except av.FFmpegError as error:
            raise ValueError(f"the video is corrupt ({error})") from error
    if len(frames) < 2:
        raise ValueError("fewer than two decodable frames")
    times = np.asarray(times) - times[0]
    duration = times[-1] + float(np.median(np.diff(times)))
    count = int(math.floor(duration * fps + 1e-6))
    wanted = (np.arange(count) + 0.5) / fps
    picks = np.clip(np.searchsorted(times, wanted, side="right") - 1, 0, len(frames) - 1)
    return np.stack([frames[i] for i in picks])


def mask_info(crop_size: int, upper_edge: str, mask_hold: float, expand: float = DEFAULTS.mask_expand) -> dict:
    """How a clip's crops and mask were made, for each shard clip's info (training writes it into the
    model's ``defaults``); feather is prepare_face_crops' default."""
    return {"crop_size": int(crop_size), "upper_edge": upper_edge, "mask_expand": float(expand),
            "mask_feather": DEFAULTS.mask_feather, "mask_hold": float(mask_hold)}


def clip_starts(usable: np.ndarray, clip_frames: int, stride: int) -> list[int]:
    """Starts of clips of ``clip_frames`` frames that lie entirely in runs where ``usable`` is True."""
    starts, t = [], 0
    while t + clip_frames <= len(usable):
        if usable[t:t + clip_frames].all():
            starts.append(t)
            t += stride
        else:
            t += int(np.argmin(usable[t:t + clip_frames])) + 1  # jump past the bad frame
    return starts


class _Worker:
    """Per-process state: Whisper and the VAE are loaded once per worker."""

    def __init__(self, config: PrepConfig):
        from ..audio import load_whisper_encoder
        from ..compat import make_torchvision_importable

        make_torchvision_importable()
        self.config = config
        self.whisper = load_whisper_encoder(config.whisper)
        self.vae = None
        if config.vae:
            from .train import load_vae

            self.vae = load_vae(config.vae)

    def process(self, video: Path) -> dict:

        from ..audio import load_audio
        from ..face import prepare_face_crops, transform_points
        from ..pipeline import build_masked_video_conditioning, encode_latents
        from .shards import write_shard

        config = self.config
        target = Path(config.output) / f"{video.stem}.safetensors"
        frames = read_video(video, config.fps)
        try:
            audio = load_audio(video)
        except ValueError as error:
            raise ValueError("no audio" if "no audio stream" in str(error) else str(error)) from error
        crops = prepare_face_crops(frames, fps=config.fps, size=config.crop_size, upper_edge=config.upper_edge,
                                   mask_hold=config.mask_hold,
                                   backend=config.backend)
        found = crops.track.found
        if found.mean() < 0.5:
            raise ValueError(f"no face in {int((~found).sum())} of {len(found)} frames")
        stride = config.clip_stride or config.clip_frames
        starts = clip_starts(found, config.clip_frames, stride)
        if not starts:
            raise ValueError(f"no run of {config.clip_frames} frames with a face (found in {int(found.sum())} frames)")
        features = self.whisper.frame_features(audio, config.fps, num_frames=len(frames)).half().numpy()
        landmarks = transform_points(crops.track.landmarks, crops.transforms).astype(np.float32)
        masks = np.round(crops.masks * 255).astype(np.uint8)
        clips, infos = [], []
        for start in starts:
            window = slice(start, start + config.clip_frames)
            clip = {"frames": crops.crops[window], "mask": masks[window], "landmarks": landmarks[window],
                    "whisper": features[window], "transforms": crops.transforms[window]}
            if self.vae is not None:
                pixels = uint8_to_model(clip["frames"])
                mask = uint8_to_mask(clip["mask"])
                clip["latents"] = encode_latents(self.vae, pixels).half().numpy()
                clip["masked_latents"] = build_masked_video_conditioning(self.vae, pixels, mask)[0].half().numpy()
            clips.append(clip)
            infos.append({"source": video.name, "start_frame": start, "fps": config.fps,
                          "num_frames": config.clip_frames, **mask_info(config.crop_size, config.upper_edge,
                                                                         config.mask_hold)})
        write_shard(target, clips, infos)
        return {"video": video.name, "clips": len(clips), "frames": len(frames)}


_WORKER: _Worker | None = None


def _init_worker(config: PrepConfig) -> None:
    global _WORKER
    import torch

    torch.set_num_threads(1)
    _WORKER = _Worker(config)


def _run_one(video: str) -> dict:
    try:
        return _WORKER.process(Path(video))
    except Exception as error:  # noqa: BLE001 - a bad video is reported and skipped, never fatal
        return {"video": Path(video).name, "error": str(error) or type(error).__name__}


def prepare_dataset(config: PrepConfig, progress: bool = True) -> dict:
    """Prepare every video in ``config.input`` (skipping those already done); returns the report."""
    source, output = Path(config.input), Path(config.output)
    if not source.is_dir():
        raise ValueError(f"{source} is not a folder of videos")
    videos = sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise ValueError(f"No videos ({', '.join(VIDEO_SUFFIXES)}) in {source}")
    output.mkdir(parents=True, exist_ok=True)
    report_path = output / "prep_report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {"prepared": [], "skipped": []}
    done = {entry["video"] for entry in report["prepared"]} | {entry["video"] for entry in report["skipped"]}
    todo = [v for v in videos if v.name not in done and not (output / f"{v.stem}.safetensors").is_file()]
    report["config"] = asdict(config)

    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="prep", unit="video", disable=not progress)
    if config.workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(config.workers, _init_worker, (config,)) as pool:
            results = pool.imap_unordered(_run_one, [str(v) for v in todo])
            for result in results:
                _record(report, result, report_path)
                bar.update()
    else:
        if todo:
            _init_worker(config)
        for video in todo:
            _record(report, _run_one(str(video)), report_path)
            bar.update()
    bar.close()
    return report


def _record(report: dict, result: dict, path: Path) -> None:
    (report["skipped"] if "error" in result else report["prepared"]).append(result)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=2))
    os.replace(partial, path)
