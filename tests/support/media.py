"""Media for tests: lossless clips of any size (odd ones too), what a written video holds."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_clip(path: Path, frames: np.ndarray, fps: Fraction | float) -> Path:
    """uint8 RGB ``[T, H, W, 3]`` as FFV1 in Matroska (lossless, any size), without sound."""
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("ffv1", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        container.mux(stream.encode())
    return path


def probe(path: Path) -> dict:
    """Frame count, rate, size, the decoded frames (uint8 RGB) and seconds of sound (None without)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        rate = Fraction(video.average_rate)
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video)])
    audio_seconds = None
    with av.open(str(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            audio_seconds = sum(frame.samples for frame in container.decode(stream)) / stream.sample_rate
    return {"frames": len(frames), "fps": rate, "size": frames.shape[1:3], "pixels": frames,
            "audio_seconds": audio_seconds}
