"""SVD import proven against ComfyUI 0.3.75's own SVD model definition (run in a subprocess)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lipsync_core.configs import SayAnythingConfig, build_vae
from lipsync_core.models import SayAnythingModel
from lipsync_core.models.unet import SayAnythingUNet
from lipsync_core.svd_import import (
    SVDImportError,
    detect_svd_size,
    load_svd_vae,
    model_from_svd,
    svd_key_map,
)
from tests.support.svd import write_tiny_svd_checkpoint

ROOT = Path(__file__).resolve().parents[2]
COMFY = ROOT / ".cache" / "comfyui"
SVD_UNET_PARAMS = 1_524_623_082


@pytest.fixture(scope="module")
def comfy_reference(tmp_path_factory):
    if not (COMFY / "comfy").is_dir():
        pytest.fail(f"ComfyUI 0.3.75 is missing at {COMFY}; run tools/setup.sh")
    out = tmp_path_factory.mktemp("comfy_svd")
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("comfy_svd_reference.py")), str(COMFY), str(out)],
        capture_output=True, text=True, timeout=300,
        # The checkout (tools.comfyui) and ComfyUI's folder on the path; leave the ComfyUI folder as it is.
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(COMFY)]), PYTHONDONTWRITEBYTECODE="1"),
    )
    if completed.returncode != 0:
        pytest.fail(f"ComfyUI's SVD definition did not run:\n{completed.stderr[-3000:]}")
    return out


def test_every_original_key_consumed_and_every_parameter_filled(comfy_reference):
    original = {k: tuple(v) for k, v in json.loads((comfy_reference / "full_keys.json").read_text()).items()}
    unet_map, vae_map, ignored = svd_key_map(original)
    assert ignored == []  # comfy's definition holds only UNet and VAE
    assert len(unet_map) == 1428 and len(vae_map) == 372
    assert sum(math.prod(s) for k, s in original.items() if k in unet_map) == SVD_UNET_PARAMS

    # UNet: one-to-one onto our full-size UNet's parameters, same shapes (conv_in: 8 of our 9 channels).
    config = SayAnythingConfig.preset("full")
    with torch.device("meta"):
        unet = SayAnythingUNet(**config.unet.diffusers_kwargs())
    ours = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    assert len(set(unet_map.values())) == len(unet_map)
    assert set(unet_map.values()) == set(ours)
    for key, target in unet_map.items():
        expected = ours[target]
        if target == "conv_in.weight":
            assert expected == (320, 9, 3, 3) and original[key] == (320, 8, 3, 3)
        else:
            assert original[key] == expected, key

    # VAE: every diffusers parameter filled; quant_conv (absent in the original) becomes the identity.
    with torch.device("meta"):
        vae = build_vae("full")
    ours = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    assert len(set(vae_map.values())) == len(vae_map)
    assert set(ours) - set(vae_map.values()) == {"quant_conv.weight", "quant_conv.bias"}
    for key, target in vae_map.items():
        shape = original[key]
        if ".attentions.0.to_" in target and target.endswith(".weight"):
            shape = shape[:2]  # 1x1 convolution -> linear
        assert shape == ours[target], key


def test_full_size_parameter_counts_on_meta_device():
    with torch.device("meta"):
        model = SayAnythingModel(SayAnythingConfig.preset("full"))
    counts = model.num_parameters()
    mask_channel = 320 * 3 * 3  # the widened conv_in's extra input channel
    assert counts["unet"] == SVD_UNET_PARAMS + mask_channel
    # audio: Linear(5*384 -> 512), Linear(10*512 -> 4*512), Linear(512 -> 1024), LayerNorm(1024)
    audio = (1920 * 512 + 512) + (5120 * 2048 + 2048) + (512 * 1024 + 1024) + 2048
    assert counts["audio_projection"] == audio == 11_998_720

    # ID-Guider: stem conv + 3 halvings at 64 channels, four stages (64, 128, 256, 256), 1x1 projections
    def conv(i, o, k=3):
        return i * o * k * k + o

    stem = conv(3, 64) + 3 * conv(64, 64)
    stages = sum(conv(i, o) + 2 * o + conv(o, o) for i, o in [(64, 64), (64, 128), (128, 256), (256, 256)])
    projections = sum(conv(i, o, 1) for i, o in [(64, 320), (128, 640), (256, 1280), (256, 1280)])
    assert counts["id_guider"] == stem + stages + projections == 3_235_968
    assert counts["total"] == SVD_UNET_PARAMS + mask_channel + audio + 3_235_968 == 1_539_860_650
    # Nothing allocated but diffusers' one-element blend factors (it builds them with torch.Tensor([a])).
    assert sum(p.numel() for p in model.parameters() if not p.is_meta) < 64


def test_imported_unet_and_vae_compute_what_comfy_computes(comfy_reference):
    """The tiny original-layout model, run by ComfyUI's code and by ours after import, agrees."""
    path = comfy_reference / "tiny_svd.safetensors"
    io = load_file(str(comfy_reference / "tiny_io.safetensors"))
    assert detect_svd_size(path) == "tiny"
    model, vae = model_from_svd(path)
    frames = io["x"].shape[0]

    sample = torch.cat([io["x"], torch.ones(frames, 1, *io["x"].shape[-2:])], dim=1)[
        None
    ]  # mask channel is zero-weighted
    context = io["context"][None]  # the same tokens on every frame
    with torch.no_grad():
        ours = model.unet(sample, io["timestep"][:1], context, io["added_time_ids"])
    assert io["unet_out"].abs().mean() > 1e-2
    torch.testing.assert_close(ours[0], io["unet_out"], rtol=1e-4, atol=1e-4)

    with torch.no_grad():
        moments = vae.quant_conv(vae.encoder(io["pixels"]))
        decoded = vae.decode(io["latents"], num_frames=frames).sample
    torch.testing.assert_close(moments, io["moments"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(decoded, io["decoded"], rtol=1e-4, atol=1e-4)

    original = load_file(str(path))
    torch.testing.assert_close(
        model.unet.conv_in.weight[:, :8], original["model.diffusion_model.input_blocks.0.0.weight"]
    )
    assert torch.count_nonzero(model.unet.conv_in.weight[:, 8:]) == 0
    assert all(torch.count_nonzero(p.weight) == 0 for p in model.id_guider.projections)
    assert not any(t.is_meta for t in list(model.parameters()) + list(vae.parameters()))


def test_tiny_svd_writer_uses_the_original_layout(comfy_reference, tmp_path):
    ours = write_tiny_svd_checkpoint(tmp_path / "svd_tiny.safetensors")
    with safe_open(str(ours), "pt") as a, safe_open(str(comfy_reference / "tiny_svd.safetensors"), "pt") as b:
        assert {k: a.get_slice(k).get_shape() for k in a.keys()} == {k: b.get_slice(k).get_shape() for k in b.keys()}
    model, vae = model_from_svd(ours, dtype=torch.float16)
    assert model.dtype == torch.float16 and vae.dtype == torch.float16
    assert load_svd_vae(ours).dtype == torch.float32


def test_import_errors_name_the_file(tmp_path, tiny_model):
    from lipsync_core.checkpoint import save_checkpoint

    sayanything = save_checkpoint(tmp_path / "sayanything.safetensors", tiny_model)
    with pytest.raises(SVDImportError, match="sayanything.safetensors has no model.diffusion_model"):
        model_from_svd(sayanything)
    broken = tmp_path / "svd_xt.safetensors"
    write_tiny_svd_checkpoint(broken)
    broken.write_bytes(broken.read_bytes()[:1000])
    with pytest.raises(SVDImportError, match="svd_xt.safetensors is not a readable safetensors file"):
        model_from_svd(broken)
    other = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, str(other))
    with pytest.raises(SVDImportError, match="sd15.safetensors: the UNet/VAE shapes are not Stable Video Diffusion"):
        model_from_svd(other)
    with pytest.raises(FileNotFoundError, match="models/checkpoints"):
        model_from_svd(tmp_path / "missing.safetensors")
