"""Lip sync from file to file in bounded memory: the video is a stream, not a tensor.

``lipsync_file`` is the file front end of ``dubbing.dub`` (the same stages and frames as the in-memory
``dubbing.lipsync``): a ``VideoFileSource`` decodes the source three times (tracking, canvas, writing) and a
``VideoFileSink`` pastes into the re-read frames and encodes them with the audio muxed. Buffers that grow with
the length and exceed ``spill_bytes`` live in an unlinked temporary file, read and written a window at a time,
so they cost disk, not memory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction

import numpy as np
import torch

from .audio import Audio
from .dubbing import EditedChunk, ProgressCallback, dub
from .face import paste_back
from .media import VideoReader, VideoWriter
from .plan import DEFAULT_SPILL_BYTES, StreamSettings
from .tensors import frames_to_uint8, uint8_to_frames


class SpilledFrames:
    """A ``[T, ...]`` float32 array in a temporary file (deleted as soon as it is open), read and written
    by slices of frames with ``pread``/``pwrite``: the page cache may keep it, the process does not."""

    def __init__(self, shape: tuple[int, ...], directory: str | None = None):
        self.shape = torch.Size(shape)
        self.dtype = torch.float32
        self.ndim = len(shape)
        self._frame_floats = int(np.prod(shape[1:], dtype=np.int64))
        handle, path = tempfile.mkstemp(prefix="sayanything-", suffix=".frames", dir=directory)
        os.unlink(path)  # nothing is left behind, whatever happens to this process
        self._fd = handle
        os.ftruncate(handle, 4 * self._frame_floats * shape[0])

    def _range(self, index) -> tuple[int, int]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self.shape[0])
            if step != 1:
                raise IndexError("SpilledFrames takes contiguous slices of frames")
            return start, max(start, stop)
        index = int(index) + (self.shape[0] if int(index) < 0 else 0)
        if not 0 <= index < self.shape[0]:
            raise IndexError(f"frame {index} is outside {self.shape[0]} frames")
        return index, index + 1

    def __getitem__(self, index) -> torch.Tensor:
        start, stop = self._range(index)
        count = (stop - start) * self._frame_floats
        data = os.pread(self._fd, 4 * count, 4 * start * self._frame_floats)
        array = torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(stop - start, *self.shape[1:])
        return array[0] if not isinstance(index, slice) else array

    def __setitem__(self, index, value) -> None:
        start, stop = self._range(index)
        value = torch.as_tensor(value, dtype=torch.float32).expand(stop - start, *self.shape[1:])
        os.pwrite(self._fd, value.contiguous().numpy().tobytes(), 4 * start * self._frame_floats)

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None


def frame_buffer(
    shape,
    dtype: torch.dtype = torch.float32,
    spill_bytes: int | None = DEFAULT_SPILL_BYTES,
    directory: str | None = None,
):
    """Zeros ``[T, ...]`` in memory, or in a :class:`SpilledFrames` file when larger than ``spill_bytes``."""
    size = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
    if spill_bytes is None or size <= spill_bytes:
        return torch.zeros(shape, dtype=dtype)
    if dtype != torch.float32:
        raise ValueError("spilled buffers hold float32")
    return SpilledFrames(tuple(shape), directory)


class VideoFileSource:
    """A video file (or an image, held as a still) read frame by frame; ``num_frames`` is counted by the first
    full pass."""

    def __init__(self, reader: VideoReader):
        self.reader = reader
        self.frame_size = (reader.info.height, reader.info.width)

    @property
    def num_frames(self) -> int:
        return self.reader.num_frames

    def frames(self, indices: Sequence[int] | None) -> Iterator[np.ndarray]:
        return iter(self.reader) if indices is None else self.reader.frames(indices)


class VideoFileSink:
    """Edited frames encoded into ``output`` like ``reader``'s video (size, pixel format, rotation) at ``fps``, with
    ``mux_audio`` (``(samples [channels, n], rate)``; default: the fitted speech) cut or padded to the video. The
    file appears under its name only when complete (``path``)."""

    def __init__(self, output, reader: VideoReader, fps: Fraction, mux_audio=None, crf: float = 16.0,
                 preset: str = "medium"):
        self.output, self.reader, self.fps, self.mux_audio = output, reader, fps, mux_audio
        self.crf, self.preset = crf, preset
        self.path: str | None = None

    @contextmanager
    def writing(self, num_frames: int, audio: Audio):
        samples, rate = self.mux_audio or (audio.waveform.numpy()[None], audio.sample_rate)
        samples = _fit_samples(samples, round(Fraction(num_frames) / self.fps * rate))
        with VideoWriter(self.output, self.reader.info, self.fps, samples, rate, crf=self.crf,
                         preset=self.preset) as writer:

            def write(chunk: EditedChunk) -> None:
                pixels = uint8_to_frames(np.stack(chunk.frames))
                pasted = paste_back(pixels, chunk.crops, chunk.crop_masks.numpy(), chunk.transforms,
                                    found=chunk.editable, inplace=True)
                for frame in frames_to_uint8(pasted):
                    writer.write(frame)

            yield write
            self.path = writer.close()


def lipsync_file(
    video: str | os.PathLike,
    speech: Audio,
    output: str | os.PathLike,
    loaded,
    whisper,
    options=None,
    face_options=None,
    fit_mode: str = "loop",
    fps: float | Fraction | None = None,
    reference_index: int = 0,
    mux_audio: tuple[np.ndarray, int] | None = None,
    settings: StreamSettings | None = None,
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
    track=None,
    motion=None,
    style=None,
) -> str:
    """Lip-sync ``video`` (a file, or an image held as a still) to ``speech`` (mono ``Audio``) into ``output``.

    ``fps``: the frame rate (required for an image; default the video's own). ``mux_audio``: ``(samples float32
    [channels, n], sample_rate)`` put in the output as it is (cut or padded to the video); default: ``speech``.
    The other arguments are ``dubbing.dub``'s. The output keeps the source's size, fps, pixel format and
    rotation; it appears under its name only when complete. Returns the output path.
    """
    settings = settings or StreamSettings()
    reader = VideoReader(video)
    fps = fps or reader.info.fps
    if fps is None:
        raise ValueError(f"{video} is an image: give the frame rate (e.g. fps=25)")
    fps = Fraction(fps).limit_denominator(1001)
    sink = VideoFileSink(output, reader, fps, mux_audio, crf=settings.crf, preset=settings.preset)
    try:
        dub(VideoFileSource(reader), speech, sink, loaded, whisper, fps, options, face_options, fit_mode,
            reference_index, track, None, motion, style, device, progress,
            buffer=lambda shape, dtype: frame_buffer(shape, dtype, settings.spill_bytes, settings.spill_dir))
    finally:
        reader.close()
    return sink.path
def _fit_samples(samples: np.ndarray, length: int) -> np.ndarray:
    """Audio ``[C, N]`` cut or padded with silence to ``length`` samples."""
    samples = np.atleast_2d(np.asarray(samples, dtype=np.float32))
    if samples.shape[1] >= length:
        return samples[:, :length]
    return np.pad(samples, ((0, 0), (0, length - samples.shape[1])))
