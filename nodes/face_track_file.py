"""Load a face track from a file: for faces mediapipe does not see (drawn characters, the toy world)
or landmarks another tracker found. The file is a ``FaceTrack.save`` .npz in ComfyUI's input folder.
"""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from .face import AUTO_FRACTION, mask_inputs, mask_model_input, mask_options, mask_outputs, model_defaults
from .types import CATEGORY, check_frames

TRACK_SUFFIX = ".npz"


def track_files() -> list[str]:
    folder = folder_paths.get_input_directory()
    if not os.path.isdir(folder):
        return []
    return sorted(name for name in os.listdir(folder) if name.endswith(TRACK_SUFFIX))


class SayAnythingLoadFaceTrack(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SayAnythingLoadFaceTrack",
            display_name="SayAnything Load Face Track",
            category=CATEGORY,
            description="Reads a face track (478 landmarks per frame, saved with lipsync_core's FaceTrack.save "
            "as .npz into ComfyUI's input folder) instead of tracking with mediapipe, and builds the same "
            "held adaptive mask as SayAnything Face Mask; use it in that node's place for faces mediapipe "
            "cannot find. Connect mask and face_track to SayAnything Face Crop.",
            inputs=[
                io.Image.Input("images", tooltip="The video frames the track belongs to (one landmark set each)."),
                io.Combo.Input("track_file", options=track_files(),
                               tooltip="A FaceTrack .npz in ComfyUI's input folder."),
                io.Float.Input("fps", default=25.0, min=1.0, max=240.0, step=0.001,
                               tooltip="Frame rate of the frames (the mask hold is in seconds)."),
                *mask_inputs(),
                mask_model_input(),
            ],
            outputs=mask_outputs(),
        )

    @classmethod
    def validate_inputs(cls, track_file: str, **_) -> bool | str:
        if not folder_paths.exists_annotated_filepath(track_file):
            return f"No face track file {track_file!r} in ComfyUI's input folder"
        return True

    @classmethod
    def fingerprint_inputs(cls, track_file: str, **_) -> float:
        return os.path.getmtime(folder_paths.get_annotated_filepath(track_file))  # rerun when the file changes

    @classmethod
    def execute(cls, images, track_file: str, fps: float, upper_edge: str, expand: float, feather: float,
                mask_hold: float = AUTO_FRACTION, model=None) -> io.NodeOutput:
        from ..lipsync_core.face import FaceTrack as Track
        from ..lipsync_core.inference import draw_face_preview, face_mask

        frames = check_frames(images)
        track = Track.load(folder_paths.get_annotated_filepath(track_file))
        size = tuple(frames.shape[1:3])
        if track.num_frames != frames.shape[0] or tuple(track.frame_size) != size:
            raise ValueError(
                f"{track_file} tracks {track.num_frames} frames of {tuple(track.frame_size)} but the images are "
                f"{frames.shape[0]} frames of {size}; save the track of these frames (after any fitting to the audio)"
            )
        mask = face_mask(track, fps, mask_options(upper_edge, expand, feather, mask_hold),
                         defaults=model_defaults(model))
        return io.NodeOutput(mask, track, draw_face_preview(frames, mask, track))
