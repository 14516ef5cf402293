"""Video files as streams: probe, decode frame by frame (in any order, through a small cache), and
encode as you go with the audio muxed in.

Nothing here holds a video: a reader keeps one decoder and a bounded cache of recent frames, a writer
one frame. Frames are uint8 RGB ``[H, W, 3]`` in the file's stored orientation; the rotation a player
applies (the display matrix) is read and written back, so the output plays like the source.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}

# libx264's pixel formats; anything else is encoded as the nearest of these.
X264_FORMATS = {
    "yuv420p",
    "yuvj420p",
    "yuv422p",
    "yuvj422p",
    "yuv444p",
    "yuvj444p",
    "yuv420p10le",
    "yuv422p10le",
    "yuv444p10le",
}


@dataclass
class VideoInfo:
    """What a video file (or an image: one frame, no fps) holds, read from its header and first frame."""

    path: str
    width: int
    height: int
    fps: Fraction | None
    pix_fmt: str
    rotation: int = 0  # degrees counter-clockwise a player turns the stored frames
    colorspace: int = 2  # FFmpeg's AVColorSpace / range / primaries / transfer (2, 0, 2, 2: unspecified)
    color_range: int = 0
    color_primaries: int = 2
    color_trc: int = 2
    is_image: bool = False


def _open(path: str):
    import av

    try:
        return av.open(path)
    except av.FFmpegError as error:
        raise ValueError(
            f"Could not read {path} as a video ({error}); use a common video file (mp4, mov, mkv, webm)"
        ) from error


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, fps, pixel format, rotation and colour tags of a video, or of an image (``is_image``)."""
    import av

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Video or image file not found: {path}")
    if os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES:
        image = read_image(path)
        return VideoInfo(path, image.shape[1], image.shape[0], None, "yuv444p", is_image=True)
    with _open(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        context = stream.codec_context
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as error:
            raise ValueError(f"Could not decode {path} ({error}); the file may be damaged") from error
        if first is None:
            raise ValueError(f"{path} contains no video frames")
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(
            path,
            first.width,
            first.height,
            Fraction(rate) if rate else None,
            context.pix_fmt or "yuv420p",
            rotation=int(first.rotation or 0),
            colorspace=int(first.colorspace),
            color_range=int(first.color_range),
            color_primaries=int(context.color_primaries),
            color_trc=int(context.color_trc),
        )


def read_image(path: str | os.PathLike) -> np.ndarray:
    import cv2

    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"Could not read the image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class VideoReader:
    """Frames of one video (or image) by index, uint8 RGB ``[H, W, 3]``.

    ``iter(reader)`` decodes every frame once in order (and learns each frame's timestamp);
    ``reader.frames(indices)`` then serves any index sequence: forward runs decode on, a step back is
    served from a cache of recent frames (``cache_bytes``) or by seeking to the keyframe before it
    (a ping-pong loop of a long video).
    """

    def __init__(self, path: str | os.PathLike, cache_bytes: int = 64 << 20):
        self.info = probe_video(path)
        self.path = self.info.path
        self.cache_bytes = cache_bytes
        self._pts: list[int | None] = []
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._decoder: Iterator[tuple[int, np.ndarray]] | None = None
        self._next = 0  # index the open decoder yields next

    @property
    def num_frames(self) -> int:
        """Frames counted by the first full pass (``iter(reader)``)."""
        return 1 if self.info.is_image else len(self._pts)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.info.is_image:
            yield read_image(self.path)
            return
        self._pts = []
        for pts, frame in self._decode():
            self._pts.append(pts)
            yield frame
        if not self._pts:
            raise ValueError(f"{self.path} contains no video frames")

    def frames(self, indices: Iterable[int]) -> Iterator[np.ndarray]:
        """The frames at ``indices``, in that order (a first full pass is made if none was)."""
        if self.info.is_image:
            image = read_image(self.path)
            for _ in indices:
                yield image
            return
        if not self._pts:
            for _ in self:
                pass
        for index in indices:
            index = int(index)
            if not 0 <= index < self.num_frames:
                raise IndexError(f"frame {index} is outside the video's {self.num_frames} frames")
            if index in self._cache:
                self._cache.move_to_end(index)
                yield self._cache[index]
                continue
            if self._decoder is None or index < self._next:
                self._restart_before(index)
            frame = None
            while self._next <= index:
                position, frame = next(self._decoder)
                self._next = position + 1
                self._remember(position, frame)
            yield frame

    def close(self) -> None:
        self._decoder = None
        self._cache.clear()

    def _remember(self, index: int, frame: np.ndarray) -> None:
        self._cache[index] = frame
        while len(self._cache) > 1 and len(self._cache) * frame.nbytes > self.cache_bytes:
            self._cache.popitem(last=False)

    def _restart_before(self, index: int) -> None:
        """Position the decoder at or before ``index``: a seek to the keyframe before it where the
        timestamps allow, else from the start."""
        by_pts = {pts: i for i, pts in enumerate(self._pts) if pts is not None}
        start_pts = self._pts[index] if index > 0 else None
        self._decoder = self._indexed(self._decode(seek=start_pts), by_pts if start_pts is not None else None)
        self._next = 0

    def _indexed(self, decoded, by_pts: dict | None):
        count = 0
        for pts, frame in decoded:
            if by_pts is None:
                yield count, frame
                count += 1
            elif pts in by_pts:
                yield by_pts[pts], frame
            else:  # timestamps do not match the first pass: count from the start instead
                yield from self._indexed(self._decode(), None)
                return

    def _decode(self, seek: int | None = None) -> Iterator[tuple[int | None, np.ndarray]]:
        import av

        with _open(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if seek is not None:
                container.seek(seek, stream=stream, backward=True, any_frame=False)
            index = 0
            try:
                for frame in container.decode(stream):
                    yield frame.pts, _to_rgb(frame, self.info)
                    index += 1
            except av.FFmpegError as error:
                raise ValueError(
                    f"Could not decode frame {index} of {self.path} ({error}); the file is damaged or truncated. "
                    "Re-export the video or cut off the damaged end."
                ) from error


def _to_rgb(frame, info: VideoInfo) -> np.ndarray:
    if (frame.width, frame.height) != (info.width, info.height):
        raise ValueError(
            f"{info.path} changes size mid-stream ({info.width}x{info.height} -> {frame.width}x{frame.height}); "
            "re-encode it at one size first"
        )
    return frame.to_ndarray(format="rgb24")


def output_pixel_format(info: VideoInfo) -> str:
    """The source's pixel format where libx264 has it and the size allows (4:2:0 needs even sides),
    else 4:4:4, which keeps every size exactly."""
    fmt = {"yuvj420p": "yuv420p", "yuvj422p": "yuv422p", "yuvj444p": "yuv444p", "nv12": "yuv420p"}.get(
        info.pix_fmt, info.pix_fmt
    )
    if fmt not in X264_FORMATS:
        fmt = "yuv444p"
    if ("420" in fmt and (info.width % 2 or info.height % 2)) or ("422" in fmt and info.width % 2):
        fmt = "yuv444p10le" if fmt.endswith("10le") else "yuv444p"
    return fmt


class VideoWriter:
    """An h264 mp4 written frame by frame, with audio muxed alongside (AAC), under a temporary name
    until ``close()`` succeeds: a failed or cancelled run leaves no file under the final name.

    ``like``: the source's :class:`VideoInfo` (size, pixel format, rotation and colour tags are kept).
    ``audio``: ``float32 [channels, samples]`` at ``sample_rate`` Hz, or None.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        like: VideoInfo,
        fps: Fraction | float,
        audio: np.ndarray | None = None,
        sample_rate: int | None = None,
        crf: float = 16,
        preset: str = "medium",
    ):
        import av

        self.path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        self.partial = os.path.join(directory, f".{os.path.basename(self.path)}.partial.mp4")
        self.info = like
        self.rate = Fraction(fps).limit_denominator(1001)
        self.container = av.open(self.partial, mode="w")
        try:
            self.video = self.container.add_stream("libx264", rate=self.rate)
            self.video.width, self.video.height = like.width, like.height
            self.video.pix_fmt = output_pixel_format(like)
            self.video.time_base = 1 / self.rate
            self.video.options = {"crf": f"{crf:g}", "preset": preset}
            context = self.video.codec_context
            context.colorspace, context.color_range = like.colorspace, like.color_range
            context.color_primaries, context.color_trc = like.color_primaries, like.color_trc
            if like.rotation:
                self.video.set_display_rotation(like.rotation)
            self.audio, self.audio_stream, self.sample_rate = None, None, sample_rate
            if audio is not None:
                audio = np.ascontiguousarray(np.atleast_2d(audio), dtype=np.float32)
                layout = {1: "mono", 2: "stereo"}.get(audio.shape[0])
                if layout is None:  # more channels than AAC's common layouts here: keep the first two
                    audio, layout = audio[:2], "stereo"
                self.audio = audio
                self.audio_stream = self.container.add_stream("aac", rate=sample_rate, layout=layout)
                self.audio_stream.bit_rate = 96_000 * audio.shape[0]
        except Exception:
            self._abandon()
            raise
        self.frames_written = 0
        self.samples_written = 0

    def write(self, frame: np.ndarray) -> None:
        """One uint8 RGB frame ``[H, W, 3]``; audio up to the end of that frame goes in beside it."""
        import av

        if frame.shape != (self.info.height, self.info.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 [{self.info.height}, {self.info.width}, 3], got {frame.dtype} {frame.shape}"
            )
        image = av.VideoFrame.from_ndarray(frame, format="rgb24")
        image = image.reformat(format=self.video.pix_fmt, dst_colorspace=self.info.colorspace or None)
        image.pts = self.frames_written
        self.container.mux(self.video.encode(image))
        self.frames_written += 1
        self._write_audio_until(self.frames_written)

    def _write_audio_until(self, frames: int) -> None:
        import av

        if self.audio is None:
            return
        end = min(self.audio.shape[1], int(round(Fraction(frames) / self.rate * self.sample_rate)))
        if end <= self.samples_written:
            return
        chunk = self.audio[:, self.samples_written : end]
        packet = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(chunk), format="fltp", layout=self.audio_stream.layout
        )
        packet.sample_rate, packet.pts = self.sample_rate, self.samples_written
        self.container.mux(self.audio_stream.encode(packet))
        self.samples_written = end

    def close(self) -> str:
        """Flush, mux the rest of the audio and move the file to its final name."""
        try:
            self.container.mux(self.video.encode())
            if self.audio is not None:
                self.samples_written = min(self.samples_written, self.audio.shape[1])
                self._write_audio_until(10**12)
                self.container.mux(self.audio_stream.encode())
            self.container.close()
        except Exception:
            self._abandon()
            raise
        os.replace(self.partial, self.path)
        return self.path

    def _abandon(self) -> None:
        try:
            self.container.close()
        except Exception:  # already broken: the partial file goes either way
            pass
        if os.path.exists(self.partial):
            os.remove(self.partial)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self._abandon()
