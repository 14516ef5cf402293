"""The mask nodes follow the connected model's training settings on auto, in a real ComfyUI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support.workflows import TEST_SVD, run_ok
from tools.demo_assets import PORTRAIT_FILE

pytestmark = pytest.mark.comfy

MASK_MODEL = "sayanything_eyes_mask_test.safetensors"
AUTO = {"upper_edge": "auto", "expand": -1.0, "feather": -1.0, "mask_hold": -1.0}
EXPLICIT = {"upper_edge": "nose", "expand": 0.08, "feather": 0.06, "mask_hold": 0.5}  # ModelDefaults()'s
MODEL_MASK = {"upper_edge": "eyes", "expand": 0.2, "feather": 0.02, "mask_hold": 0.0}  # mask_model's file
TRACK_FILE = "sayanything_portrait_track.npz"


@pytest.fixture(scope="module")
def mask_model(comfy_models):
    """A tiny model whose file says it was trained with an eye-level, wider mask."""
    from lipsync_core.checkpoint import save_checkpoint
    from lipsync_core.configs import ModelDefaults, SayAnythingConfig
    from lipsync_core.models import SayAnythingModel

    torch.manual_seed(2)
    defaults = ModelDefaults(upper_edge=MODEL_MASK["upper_edge"], mask_expand=MODEL_MASK["expand"],
                             mask_feather=MODEL_MASK["feather"], mask_hold=MODEL_MASK["mask_hold"])
    save_checkpoint(comfy_models / "sayanything" / MASK_MODEL, SayAnythingModel(SayAnythingConfig.preset("tiny")),
                    defaults=defaults, overwrite=True)
    return MASK_MODEL


def _mask(comfy, comfy_base, widgets: dict, model: str | None, node: str = "SayAnythingFaceMask") -> np.ndarray:
    face = {"images": ["portrait", 0], "fps": 25.0, **widgets}
    tracking = {"face": "largest", "face_index": 0}
    face.update({"track_file": TRACK_FILE} if node == "SayAnythingLoadFaceTrack" else tracking)
    prompt = {
        "portrait": {"class_type": "LoadImage", "inputs": {"image": PORTRAIT_FILE}},
        "face": {"class_type": node, "inputs": face},
        "image": {"class_type": "MaskToImage", "inputs": {"mask": ["face", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["image", 0], "filename_prefix": "face_mask"}},
    }
    if model is not None:
        prompt["model"] = {"class_type": "SayAnythingModelLoader",
                           "inputs": {"model": model, "svd_checkpoint": TEST_SVD, "precision": "fp32"}}
        face["model"] = ["model", 0]
    (path,) = comfy.output_files(run_ok(comfy, prompt).prompt_id, comfy_base)
    return np.asarray(Image.open(path).convert("L")).astype(np.float32) / 255.0


def test_face_mask_takes_the_models_mask_on_auto(comfy, comfy_base, comfy_inputs, object_info, mask_model):
    plain = _mask(comfy, comfy_base, AUTO, None)
    explicit = _mask(comfy, comfy_base, EXPLICIT, None)
    np.testing.assert_array_equal(plain, explicit)  # without a model, auto is ModelDefaults()
    models = _mask(comfy, comfy_base, AUTO, mask_model)
    rows = np.flatnonzero((models > 0.5).any(axis=1)), np.flatnonzero((plain > 0.5).any(axis=1))
    assert rows[0][0] < rows[1][0] - 8  # the model's eye-level edge: the mask starts above the nose (116 -> 103 rows)
    assert (models > 0.5).sum() > 1.3 * (plain > 0.5).sum()
    # Widgets set by hand win over the model's settings.
    np.testing.assert_array_equal(_mask(comfy, comfy_base, EXPLICIT, mask_model), explicit)


def test_load_face_track_takes_the_models_mask_on_auto(comfy, comfy_base, comfy_inputs, object_info, mask_model):
    from lipsync_core.face import track_faces

    portrait = np.asarray(Image.open(comfy_base / "input" / PORTRAIT_FILE).convert("RGB"))
    track_faces([portrait]).save(comfy_base / "input" / TRACK_FILE)
    plain = _mask(comfy, comfy_base, AUTO, None, node="SayAnythingLoadFaceTrack")
    np.testing.assert_array_equal(plain, _mask(comfy, comfy_base, EXPLICIT, None, node="SayAnythingLoadFaceTrack"))
    # On auto the model's eye-level, wider mask: the same as those settings set by hand.
    models = _mask(comfy, comfy_base, AUTO, mask_model, node="SayAnythingLoadFaceTrack")
    np.testing.assert_array_equal(models, _mask(comfy, comfy_base, MODEL_MASK, None, node="SayAnythingLoadFaceTrack"))
    assert (models > 0.5).sum() > 1.3 * (plain > 0.5).sum()
