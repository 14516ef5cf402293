"""Preprocessing speed on this machine: ``python -m benchmarks.face [--frames N]``.

Times landmarks (tracking), the crop-space mask, alignment + crop, their sum, and paste-back, on a
synthetic video made from scikit-image's astronaut portrait (moving, rotating, zooming) at 512x512 and
1920x1080. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import cv2
import numpy as np


def _video(height: int, width: int, frames: int, face_px: int) -> np.ndarray:
    from skimage import data

    portrait = data.astronaut()  # the face is ~110 px wide in the 512 px portrait
    scale = face_px / 110
    out = []
    for t in range(frames):
        phase = t / max(frames - 1, 1)
        matrix = cv2.getRotationMatrix2D((225, 135), 6 * np.sin(2 * np.pi * phase), scale * (1 + 0.1 * phase))
        matrix[:, 2] += (width / 2 - 225 + 0.1 * width * np.sin(2 * np.pi * phase), height / 2 - 135)
        out.append(cv2.warpAffine(portrait, matrix, (width, height), borderValue=(110, 110, 110)))
    return np.stack(out)


def _timed(function, repeat: int = 1):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def _row(video: np.ndarray, backend, size: int) -> str:
    """One table row: frames per second of each stage on ``video``."""
    from lipsync_core.face import align_transforms, crop_track, face_masks, paste_back, track_faces, warp_to_crop

    track_faces(video[:5], backend=backend)  # warm-up
    t_track, track = _timed(lambda: track_faces(video, fps=25, backend=backend))
    if not track.found.all():
        print(f"warning: face found in {track.found.sum()}/{len(video)} frames")

    def crop():
        transforms = align_transforms(track, size)
        return transforms, warp_to_crop(video, transforms, size)

    t_crop, (transforms, crops) = _timed(crop, 2)
    in_crop = crop_track(track, transforms, size)
    # the crop-space mask as prepare_face_crops makes it: outlines held over +-0.5 s
    t_mask, masks = _timed(lambda: face_masks(in_crop, hold=12), 2)
    edited = 255 - crops
    t_paste, _ = _timed(lambda: paste_back(video, edited, masks, transforms, track.found), 2)
    target = video.copy()
    t_inplace, _ = _timed(lambda: paste_back(target, edited, masks, transforms, track.found, inplace=True), 2)
    n = len(video)
    total = t_track + t_crop + t_mask
    height, width = video.shape[1:3]
    return (
        f"| {width}x{height} | {n / t_track:.0f} | {n / t_mask:.0f} | {n / t_crop:.0f} | {n / total:.0f} "
        f"| {n / t_paste:.0f} | {n / t_inplace:.0f} |"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=512, help="crop size")
    args = parser.parse_args(argv)
    from lipsync_core.face import create_backend

    backend = create_backend()  # created once: loading mediapipe's graphs takes ~1 s and is not per frame
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"cv2 threads {cv2.getNumThreads()}")
    print("| frame size | landmarks fps | mask fps | align+crop fps | landmarks+mask+crop fps | paste-back fps "
          "| paste-back in place fps |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for height, width, face_px in ((512, 512, 110), (1080, 1920, 300)):
        print(_row(_video(height, width, args.frames, face_px), backend, args.size))
    backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
