"""Test fixtures for the MuseTalk family: small random models written in the layouts users download.

* :func:`write_upstream_musetalk`: a seeded random diffusers ``UNet2DConditionModel`` saved as upstream ships
  it (``torch.save`` of the plain state dict as ``unet.pth``, its config as ``musetalk.json``).
* :func:`ldm_vae_state_dict` / :func:`write_ldm_vae`: a diffusers ``AutoencoderKL`` written in the original
  (LDM) single-file layout, like ``vae-ft-mse-840000-ema-pruned.safetensors``. diffusers has a converter only
  the other way (``convert_ldm_vae_checkpoint``), so the names are produced by rules here and the forward
  converter is asked to map every one of them back to its diffusers name (raises otherwise).
* :func:`write_multilingual_whisper_tiny` / :func:`write_musetalk_models`: a whole MuseTalk set where users put it.
* ``reference_*``: upstream's formulas, written here without the code under test (the parity references).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

from lipsync_core.models.musetalk import UNET_PRESETS

# A small SD-1.x-shaped VAE: four levels (8x downsampling, as SD's) of 32 channels (GroupNorm's 32 groups).
TINY_VAE_CONFIG = dict(
    act_fn="silu",
    block_out_channels=[32, 32, 32, 32],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=32,
    sample_size=64,
    scaling_factor=0.18215,
)


def tiny_musetalk_config() -> dict:
    return dict(UNET_PRESETS["tiny"])


def build_unet(config: dict, seed: int = 0):
    """A seeded random diffusers ``UNet2DConditionModel`` (the reference model of the parity tests)."""
    from diffusers import UNet2DConditionModel  # importable: lipsync_core.models made it so

    torch.manual_seed(seed)
    return UNet2DConditionModel(**config).eval()


def write_upstream_musetalk(folder: Path, config: dict | None = None, seed: int = 0):
    """``(unet.pth, musetalk.json, unet)`` in ``folder``, written as upstream ships them."""
    config = dict(config or tiny_musetalk_config())
    unet = build_unet(config, seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet_path, config_path = folder / "unet.pth", folder / "musetalk.json"
    torch.save(unet.state_dict(), unet_path)
    # Upstream's musetalk.json carries diffusers' bookkeeping keys too.
    bookkeeping = {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0.dev0"}
    config_path.write_text(json.dumps(bookkeeping | config))
    return unet_path, config_path, unet


def build_vae(config: dict | None = None, seed: int = 1):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**(config or TINY_VAE_CONFIG)).eval()
    # Random init leaves the posterior's log-variance near 0 (std ~1): shrink it as a trained VAE's is
    # (std ~1e-3..1e-2), so a seeded sample is a small perturbation of the mean, as with sd-vae-ft-mse.
    with torch.no_grad():
        channels = vae.config.latent_channels
        vae.quant_conv.bias[channels:] -= 8.0
    return vae


def ldm_vae_key(key: str, num_levels: int) -> str:
    """The original (LDM) name of a diffusers ``AutoencoderKL`` key."""
    rules = [
        (r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out."),
        (r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2."),
        (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.", r"encoder.down.\1.downsample.conv."),
        (r"^(encoder|decoder)\.mid_block\.attentions\.0\.group_norm\.", r"\1.mid.attn_1.norm."),
        (r"^(encoder|decoder)\.mid_block\.attentions\.0\.to_(q|k|v)\.", r"\1.mid.attn_1.\2."),
        (r"^(encoder|decoder)\.mid_block\.attentions\.0\.to_out\.0\.", r"\1.mid.attn_1.proj_out."),
    ]
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    key = re.sub(
        r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.", lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}.", key
    )
    key = re.sub(
        r"^decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.",
        lambda m: f"decoder.up.{num_levels - 1 - int(m[1])}."
        + (f"block.{m[3]}." if m[2] == "resnets" else "upsample."),
        key,
    )
    return key.replace(".conv_shortcut.", ".nin_shortcut.")


def ldm_vae_state_dict(vae) -> dict[str, torch.Tensor]:
    """The VAE's tensors under their original names (attention projections as 1x1 convolutions, as the
    original files store them), checked against diffusers' forward converter."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    levels = len(vae.config.block_out_channels)
    state = {key: value.detach().clone() for key, value in vae.state_dict().items()}
    original = {}
    for key, value in state.items():
        name = ldm_vae_key(key, levels)
        if ".mid.attn_1." in name and not name.endswith(("norm.weight", "norm.bias")) and value.ndim == 2:
            value = value[:, :, None, None]
        original[name] = value
    assert len(original) == len(state), "two diffusers keys got the same original name"
    back = convert_ldm_vae_checkpoint(dict(original), dict(vae.config))
    if set(back) != set(state) or any(not torch.equal(back[key], state[key]) for key in state):
        raise AssertionError("the reverse names do not convert back to the diffusers model: fix ldm_vae_key")
    return original


def write_ldm_vae(vae, path: Path, prefix: str = "") -> Path:
    """``vae`` as a single original-layout safetensors file (optionally under ``first_stage_model.``)."""
    from safetensors.torch import save_file

    tensors = {prefix + key: value.contiguous() for key, value in ldm_vae_state_dict(vae).items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


class NotATensor:
    """A custom object in a pickle: ``torch.load(weights_only=True)`` must refuse to build it."""

    def __init__(self, value: int = 1):
        self.value = value


def write_multilingual_whisper_tiny(folder: Path, seed: int = 0) -> Path:
    """A transformers Whisper folder with the multilingual tiny's shapes (d_model 384, 4 encoder layers, vocabulary
    51865) and random encoder weights: what MuseTalk's audio front end accepts. The real openai/whisper-tiny is
    not available offline here (the tests' real Whisper is tiny.en, which MuseTalk refuses); the decoder is left
    out, as the pack loads only the encoder."""
    from safetensors.torch import save_file
    from transformers import WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = WhisperConfig(vocab_size=51865, num_mel_bins=80, d_model=384, encoder_layers=4,
                           encoder_attention_heads=6, encoder_ffn_dim=1536, decoder_layers=4,
                           decoder_attention_heads=6, decoder_ffn_dim=1536, max_source_positions=1500)
    torch.manual_seed(seed)
    encoder = WhisperEncoder(config).eval()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    save_file({f"model.encoder.{key}": value.contiguous() for key, value in encoder.state_dict().items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def write_musetalk_models(models: Path, whisper_name: str = "openai-whisper-tiny") -> dict[str, Path]:
    """The files of a MuseTalk run, tiny and random, where the README tells users to put the real ones in
    ComfyUI's ``models``: ``musetalk/musetalkV15/unet.pth`` + ``musetalk.json`` (upstream's layout),
    ``vae/vae-ft-mse-840000-ema-pruned.safetensors`` (the original single-file layout) and a multilingual
    Whisper tiny folder in ``whisper/``. Returns their paths (``unet``, ``config``, ``vae``, ``whisper``)."""
    models = Path(models)
    unet, config, _ = write_upstream_musetalk(models / "musetalk" / "musetalkV15")
    vae = write_ldm_vae(build_vae(), models / "vae" / "vae-ft-mse-840000-ema-pruned.safetensors")
    whisper = write_multilingual_whisper_tiny(models / "whisper" / whisper_name)
    return {"unet": unet, "config": config, "vae": vae, "whisper": whisper}


# Independent references: upstream's formulas (TMElyralab/MuseTalk: musetalk/models/unet.py PositionalEncoding,
# musetalk/utils/audio_processor.py get_whisper_chunk, scripts/inference.py) on diffusers' own modules.


def reference_position_encoding(length: int, dim: int) -> torch.Tensor:
    """Upstream's PositionalEncoding: div_term = exp(arange(0, d, 2) * -(ln 10000 / d)); sin at even, cos at odd."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div_term = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


def reference_tokens(states: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Upstream's get_whisper_chunk at 25 fps on states [L, N, D]: 4 zero frames before, 12 after, frame i takes
    padded[2i : 2i + 10] as [10, L, D], flattened time-major, plus the position encoding."""
    layers, length, dim = states.shape
    by_time = states.permute(1, 0, 2)  # [N, L, D]
    padded = torch.cat([torch.zeros(4, layers, dim), by_time, torch.zeros(12, layers, dim)])
    tokens = torch.stack([padded[2 * i : 2 * i + 10].reshape(10 * layers, dim) for i in range(num_frames)])
    return tokens + reference_position_encoding(10 * layers, dim)


def reference_crops(unet, vae, crops01: torch.Tensor, tokens: torch.Tensor, generator=None) -> torch.Tensor:
    """Upstream's per-frame path on crops in 0..1: the masked crop keeps rows < S/2, both normalised to -1..1,
    encoded (mean, or a seeded sample: masked first), x 0.18215, UNet at t = 0, decoded, back to 0..1."""
    size = crops01.shape[-1]
    keep = torch.zeros(size, size)
    keep[: size // 2] = 1

    def latents(images):
        dist = vae.encode((images - 0.5) / 0.5).latent_dist
        return (dist.mode() if generator is None else dist.sample(generator=generator)) * 0.18215

    with torch.no_grad():
        masked = latents(crops01 * keep)
        reference = latents(crops01)
        out = unet(torch.cat([masked, reference], 1), torch.tensor([0]), encoder_hidden_states=tokens).sample
        image = vae.decode(out / 0.18215).sample
    return (image / 2 + 0.5).clamp(0, 1)
