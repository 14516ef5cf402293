"""Face nodes: landmarks + adaptive mask, crop to the model's square, paste back.

Kept as three nodes so users can replace any of them: a SAM or hand-drawn MASK can go into the
mask input, and the crop/paste pair works with any mask.
"""

from __future__ import annotations

import comfy.utils
from comfy_api.latest import io

from ..lipsync_core.configs import FACE_SELECT_MODES, MASK_MODES, UPPER_EDGES, ModelDefaults
from ..lipsync_core.plan import FaceOptions
from . import model_folders
from .types import FaceCrop, FaceTrack, SayAnythingModel, auto, check_frames, fps_input, node_schema

AUTO_EDGE = "auto"
AUTO_FRACTION = -1.0  # the mask widgets' auto: the model's value
USER_MASK_MODES = [mode for mode in MASK_MODES if mode != "auto"]  # a user's mask is always used somehow
DEFAULTS = ModelDefaults()


def face_choice_inputs() -> list:
    """Which face to follow (Face Mask, Mouth Motion from Video): the largest, or one by its index."""
    return [
        io.Combo.Input(
            "face",
            options=list(FACE_SELECT_MODES),
            default="largest",
            tooltip="Which face to follow when there are several: the largest, or by index (left to right).",
        ),
        io.Int.Input("face_index", default=0, min=0, max=16, tooltip="Face number from the left, for 'index'."),
    ]


def track_frames(frames, fps: float, face: str, face_index: int):
    """mediapipe's track of one face through the frames (Face Mask, Mouth Motion from Video), the node's
    progress bar moving frame by frame."""
    from ..lipsync_core.inference import track_face

    progress = comfy.utils.ProgressBar(frames.shape[0])
    return track_face(frames, fps, face=face, face_index=face_index,
                      model_folders=model_folders.folder_paths_for(model_folders.MEDIAPIPE_FOLDER),
                      progress=lambda done, total: progress.update_absolute(done, total))


def mask_outputs() -> list:
    """What the mask nodes give (Face Mask, Load Face Track): the frame-space mask, the track, a preview."""
    return [
        io.Mask.Output(display_name="mask"),
        FaceTrack.Output(display_name="face_track"),
        io.Image.Output(display_name="preview"),
    ]


def mask_inputs() -> list:
    """The adaptive mask's widgets (Face Mask, Load Face Track): upper edge, expand, feather, hold; on auto,
    the connected model's training settings (mask_model_input)."""
    return [
        io.Combo.Input(
            "upper_edge",
            options=[AUTO_EDGE, *UPPER_EDGES],
            default=AUTO_EDGE,
            tooltip="Top of the mask. Higher edges hide more of the source lips and reduce "
            "lip-motion leakage (KeySync: eye level); lower edges keep more of the face. "
            f"auto = the connected model's ({DEFAULTS.upper_edge} without a model).",
        ),
        io.Float.Input(
            "expand",
            default=AUTO_FRACTION,
            min=AUTO_FRACTION,
            max=1.0,
            step=0.01,
            tooltip="Grow the mask by this fraction of the face size; -1 = the connected model's "
            f"({DEFAULTS.mask_expand} without).",
        ),
        io.Float.Input(
            "feather",
            default=AUTO_FRACTION,
            min=AUTO_FRACTION,
            max=0.5,
            step=0.01,
            tooltip="Soft edge width as a fraction of the face size; -1 = the connected model's "
            f"({DEFAULTS.mask_feather} without).",
        ),
        io.Float.Input(
            "mask_hold",
            default=AUTO_FRACTION,
            min=AUTO_FRACTION,
            max=5.0,
            step=0.05,
            optional=True,
            tooltip="Seconds before and after each frame whose mouth outlines the mask covers "
            "(taken in the aligned face), so the mask does not open and close with the source "
            "jaw and cannot tell the model how the source lips moved; -1 = the connected model's (0.5 s without).",
        ),
    ]


def mask_model_input():
    """Last on the mask nodes, so workflows saved before it keep their input slots."""
    return SayAnythingModel.Input(
        "model",
        optional=True,
        tooltip="From SayAnything Model Loader: the mask it was trained with fills the widgets left on "
        "auto, so the graph masks as the one-node Lip Sync Video does.",
    )


def model_defaults(model):
    """The connected SayAnything model's ``ModelDefaults`` (its file's), or None without a model."""
    return None if model is None else model.payload.defaults


def mask_options(upper_edge: str, expand: float, feather: float, mask_hold: float, **face):
    """The mask widgets as FaceOptions, ``auto`` as None (lipsync_core fills it from the model's defaults)."""
    return FaceOptions(upper_edge=auto(upper_edge, AUTO_EDGE), expand=auto(expand, AUTO_FRACTION),
                       feather=auto(feather, AUTO_FRACTION), mask_hold=auto(mask_hold, AUTO_FRACTION), **face)


class SayAnythingFaceMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="SayAnythingFaceMask",
            display_name="SayAnything Face Mask",
            description="Tracks the face with mediapipe's 478-point mesh and builds the adaptive lower-face "
            "editing mask (1 = regenerate). Frames without a face get an empty mask and are left as they are. "
            "Connect images from SayAnything Fit Audio to Video; mask and face_track go to SayAnything Face Crop.",
            inputs=[
                io.Image.Input("images", tooltip="The video frames."),
                fps_input("Frame rate of the frames (landmark smoothing is tuned in seconds)."),
                *face_choice_inputs(),
                *mask_inputs(),
                io.Mask.Input(
                    "user_mask",
                    optional=True,
                    tooltip="Your own mask (e.g. drawn in LoadImage's mask editor, or from SAM). "
                    "One mask for all frames or one per frame.",
                ),
                io.Combo.Input(
                    "user_mask_mode",
                    options=USER_MASK_MODES,
                    default="replace",
                    optional=True,
                    tooltip="replace: use your mask as is; intersect: keep the face mask only inside "
                    "yours; union: add yours to the face mask.",
                ),
                mask_model_input(),
            ],
            outputs=mask_outputs(),
        )

    @classmethod
    def execute(
        cls,
        images,
        fps: float,
        face: str,
        face_index: int,
        upper_edge: str,
        expand: float,
        feather: float,
        mask_hold: float = AUTO_FRACTION,
        user_mask=None,
        user_mask_mode: str = "replace",
        model=None,
    ) -> io.NodeOutput:
        from ..lipsync_core.inference import draw_face_preview, face_mask

        frames = check_frames(images)
        track = track_frames(frames, fps, face, face_index)
        options = mask_options(upper_edge, expand, feather, mask_hold, user_mask_mode=user_mask_mode)
        mask = face_mask(track, fps, options, user_mask=user_mask, defaults=model_defaults(model))
        return io.NodeOutput(mask, track, draw_face_preview(frames, mask, track))


class SayAnythingFaceCrop(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="SayAnythingFaceCrop",
            display_name="SayAnything Face Crop",
            description="Aligns every frame's face to the model's square crop with a temporally smoothed "
            "similarity transform; the mask is cropped the same way. Connect images, and mask and face_track "
            "from SayAnything Face Mask; crops and crop_mask go to SayAnything Sampler, face_crop to SayAnything "
            "Face Paste.",
            inputs=[
                io.Image.Input("images", tooltip="The video frames."),
                io.Mask.Input("mask", tooltip="Editing mask in frame space (1 = regenerate)."),
                FaceTrack.Input("face_track", tooltip="From SayAnything Face Mask."),
                io.Int.Input(
                    "crop_size",
                    default=0,
                    min=0,
                    max=1024,
                    step=8,
                    tooltip="Side of the square crop the model works on; 0 = the size the connected "
                    "model was trained at (512 without a model: SVD-sized models).",
                ),
                SayAnythingModel.Input(
                    "model", optional=True, tooltip="From SayAnything Model Loader: supplies the crop size on auto."
                ),
            ],
            outputs=[
                io.Image.Output(display_name="crops"),
                io.Mask.Output(display_name="crop_mask"),
                FaceCrop.Output(display_name="face_crop"),
            ],
        )

    @classmethod
    def execute(cls, images, mask, face_track, crop_size: int, model=None) -> io.NodeOutput:
        from ..lipsync_core.configs import ModelDefaults
        from ..lipsync_core.inference import crop_faces

        if crop_size == 0:
            crop_size = (model_defaults(model) or ModelDefaults()).crop_size
        crops, crop_mask, transform = crop_faces(check_frames(images), mask, face_track, crop_size=crop_size)
        return io.NodeOutput(crops, crop_mask, transform)


class SayAnythingFacePaste(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="SayAnythingFacePaste",
            display_name="SayAnything Face Paste",
            description="Warps the generated crops back into the frames with a feathered mask. Pixels "
            "outside the mask, and frames without a face, stay exactly as they were. Connect crops from "
            "SayAnything Sampler, crop_mask and face_crop from SayAnything Face Crop; images go to CreateVideo.",
            inputs=[
                io.Image.Input("images", tooltip="The original video frames."),
                io.Image.Input("crops", tooltip="Generated crops from SayAnything Sampler."),
                io.Mask.Input(
                    "crop_mask",
                    tooltip="The crop-space mask from SayAnything Face Crop: where it is "
                    "0 the frames stay exactly as they were.",
                ),
                FaceCrop.Input("face_crop", tooltip="From SayAnything Face Crop."),
            ],
            outputs=[io.Image.Output(display_name="images")],
        )

    @classmethod
    def execute(cls, images, crops, crop_mask, face_crop) -> io.NodeOutput:
        from ..lipsync_core.inference import paste_faces

        return io.NodeOutput(paste_faces(check_frames(images), check_frames(crops, "crops"), crop_mask, face_crop))
