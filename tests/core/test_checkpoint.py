import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lipsync_core.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_metadata, save_checkpoint
from lipsync_core.configs import SayAnythingConfig


def _all_tensors(module):
    return {k: v for k, v in module.state_dict().items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip_every_dtype(tmp_path, tiny_model, dtype):
    path = save_checkpoint(tmp_path / "model.safetensors", tiny_model, dtype=dtype)
    stored = load_file(str(path))
    assert {k.split(".")[0] for k in stored} == {"unet", "audio_projection", "id_guider"}
    assert all(v.dtype == dtype for v in stored.values())
    meta = read_checkpoint_metadata(path)
    assert meta["format"] == "sayanything" and meta["format_version"] == "1"
    assert SayAnythingConfig.from_json(meta["config"]) == tiny_model.config

    model, vae = load_checkpoint(path)
    assert vae is None and model.dtype == dtype
    for name in ("unet", "audio_projection", "id_guider"):
        ours, theirs = _all_tensors(getattr(tiny_model, name)), _all_tensors(getattr(model, name))
        assert ours.keys() == theirs.keys()
        for key in ours:
            torch.testing.assert_close(theirs[key], ours[key].to(dtype), rtol=0, atol=0)
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    as_fp32, _ = load_checkpoint(path, dtype="fp32")
    assert as_fp32.dtype == torch.float32


def test_round_trip_with_vae(tmp_path, tiny_model, tiny_vae):
    path = save_checkpoint(tmp_path / "with_vae.safetensors", tiny_model, vae=tiny_vae)
    assert "vae_config" in read_checkpoint_metadata(path)
    _, vae = load_checkpoint(path)
    assert type(vae) is type(tiny_vae)
    assert list(vae.config.block_out_channels) == list(tiny_vae.config.block_out_channels)
    for key, value in tiny_vae.state_dict().items():
        torch.testing.assert_close(vae.state_dict()[key], value, rtol=0, atol=0)
    assert not any(t.is_meta for t in list(vae.parameters()) + list(vae.buffers()))


def test_save_never_overwrites_by_default(tmp_path, tiny_model):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="already exists"):
        save_checkpoint(path, tiny_model)
    assert path.read_bytes() == b"user data"


def test_not_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"PK\x03\x04 this is a zip, not safetensors" * 10)
    with pytest.raises(CheckpointError, match=f"{path.name} is not a readable safetensors file"):
        load_checkpoint(path)


def test_truncated(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "model.safetensors", tiny_model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{path.name}.*truncated"):
        load_checkpoint(path)


def test_not_a_sayanything_file(tmp_path):
    path = tmp_path / "svd_xt.safetensors"
    save_file({"model.diffusion_model.conv.weight": torch.zeros(2)}, str(path))
    with pytest.raises(
        CheckpointError, match=f"{path.name} is a safetensors file but not a SayAnything checkpoint.*--svd"
    ):
        load_checkpoint(path)


def _rewrite(path, tensors_fn, metadata_fn=lambda m: m):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    tensors = tensors_fn(load_file(str(path)))
    save_file(tensors, str(path), metadata=metadata_fn(metadata))


def test_shape_mismatch(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "model.safetensors", tiny_model)
    _rewrite(path, lambda t: dict(t, **{"unet.conv_in.weight": t["unet.conv_in.weight"][:, :8].contiguous()}))
    with pytest.raises(
        CheckpointError,
        match=r"model.safetensors: tensor unet.conv_in.weight has shape \[32, 8, 3, 3\].*\[32, 9, 3, 3\]",
    ):
        load_checkpoint(path)


def test_missing_keys(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "model.safetensors", tiny_model)
    _rewrite(path, lambda t: {k: v for k, v in t.items() if not k.startswith("id_guider.")})
    with pytest.raises(
        CheckpointError, match=r"model.safetensors: \d+ tensors of the model are missing, e.g. id_guider"
    ):
        load_checkpoint(path)


def test_unexpected_keys(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "model.safetensors", tiny_model)
    _rewrite(path, lambda t: dict(t, **{"unet.extra.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match="do not belong to the model.*unet.extra.weight"):
        load_checkpoint(path)


def test_bad_config_and_version(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "model.safetensors", tiny_model)
    _rewrite(path, lambda t: t, lambda m: dict(m, format_version="99"))
    with pytest.raises(CheckpointError, match="format version '99' is not supported"):
        load_checkpoint(path)
    _rewrite(path, lambda t: t, lambda m: dict(m, format_version="1", config=json.dumps({"unet": {"colour": 1}})))
    with pytest.raises(CheckpointError, match="config in its metadata is invalid"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        load_checkpoint(tmp_path / "nothing.safetensors")


def test_the_loader_recognises_the_family_or_names_the_families_it_knows(tmp_path, tiny_model, tiny_vae):
    from lipsync_core.checkpoint import FAMILIES, LoadedModel, load
    from tests.support.svd import write_tiny_svd_checkpoint

    loaded = load(save_checkpoint(tmp_path / "mine.safetensors", tiny_model, vae=tiny_vae))
    assert isinstance(loaded, LoadedModel) and loaded.family == "SayAnything"
    stranger = tmp_path / "stranger.safetensors"
    save_file({"layer.weight": torch.zeros(2, 2)}, str(stranger), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as refused:
        load(stranger)
    assert str(refused.value).startswith(f"{stranger} is not a model file of a family this pack knows "
                                         "(metadata format='pt', 1 tensors). The pack runs: ")
    assert all(family.name in str(refused.value) for family in FAMILIES)
    svd = write_tiny_svd_checkpoint(tmp_path / "svd_xt.safetensors")
    with pytest.raises(CheckpointError, match="looks like a Stable Video Diffusion checkpoint: pick it as the SVD "
                                              "checkpoint"):
        load(svd)
