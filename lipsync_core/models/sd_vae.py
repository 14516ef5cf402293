"""The Stable Diffusion 1.x VAE (sd-vae-ft-mse) that MuseTalk encodes and decodes its crops with.

Two ways users hold it:

* the single file ComfyUI users keep in ``models/vae``, ``vae-ft-mse-840000-ema-pruned.safetensors`` (or
  ``.ckpt``), in the original (LDM) key layout: converted with diffusers' own
  ``convert_ldm_vae_checkpoint``, every original key checked to be consumed once;
* a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors`` or ``.bin``), e.g. a copy of
  ``stabilityai/sd-vae-ft-mse``; old ``.bin`` files name the attention ``query/key/value/proj_attn``, which
  diffusers renames on load.

A VAE of another family is refused with a message: SVD's temporal VAE (``time_stack`` / ``time_mix`` layers),
a VAE with other than 4 latent channels (SD3 / Flux: 16), a whole checkpoint, or a folder whose config gives
another scaling factor (SDXL's 0.13025). The SDXL VAE's single file has the SD VAE's exact shapes, so only its
hash (``musetalk.identify_file``) tells it apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL

from .musetalk import LATENT_SCALE, place, read_state_dict_file

PathLike = str | os.PathLike

# sd-vae-ft-mse's config (stabilityai/sd-vae-ft-mse config.json; scaling factor the diffusers default).
SD_VAE_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "scaling_factor": LATENT_SCALE,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

_HINT = (
    "MuseTalk needs the Stable Diffusion 1.x VAE sd-vae-ft-mse: vae-ft-mse-840000-ema-pruned.safetensors "
    "(stabilityai/sd-vae-ft-mse-original) or the diffusers folder stabilityai/sd-vae-ft-mse."
)
# Training leftovers some original-layout files carry; not part of the autoencoder.
_IGNORED_PREFIXES = ("loss.", "model_ema.")
_LDM_PREFIXES = ("first_stage_model.", "vae.")


class SDVAEError(ValueError):
    """A file that is not the SD 1.x VAE; the message names the file and which file to use."""


def _other_family(path: Path, keys: list[str], shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """Why a state dict is not an SD 1.x VAE, if it is visibly another family."""
    vae_keys = [key.split("first_stage_model.")[-1] for key in keys]
    vae_keys = [key for key in vae_keys if key.startswith(("encoder.", "decoder."))]
    if any(marker in key for key in vae_keys for marker in ("time_stack", "time_mix", "time_conv_out", "temporal")):
        return f"{path} holds a temporal VAE (Stable Video Diffusion's decoder with time layers), not the SD 1.x VAE."
    if any(key.startswith(("model.diffusion_model.", "cond_stage_model.", "conditioner.")) for key in keys):
        return (
            f"{path} is a whole Stable Diffusion checkpoint (UNet, text encoder and VAE), not a VAE file; MuseTalk "
            f"was trained with sd-vae-ft-mse, which such files may not carry."
        )
    for key in ("quant_conv.weight", "encoder.conv_out.weight"):
        for prefix in ("", *_LDM_PREFIXES):
            shape = shapes.get(prefix + key)
            if shape is not None and shape[0] != 8:
                latent = shape[0] // 2
                return f"{path} is a VAE with {latent} latent channels (e.g. SD3 or Flux), not the SD 1.x VAE's 4."
    if not vae_keys:
        return f"{path} holds no VAE encoder or decoder (keys such as {keys[:3]})."
    return None


def _strip_ldm_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _LDM_PREFIXES:
        if any(key.startswith(prefix) for key in state):
            return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    return {key: value for key, value in state.items() if not key.startswith(_IGNORED_PREFIXES)}


def is_ldm_layout(keys) -> bool:
    """Whether VAE keys are in the original (LDM) layout (``encoder.down.0.block.0...``)."""
    return any(".down.0.block." in key or key.startswith("encoder.down.0.") for key in keys)


def sd_vae_config_from_ldm(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A diffusers ``AutoencoderKL`` config read from an original-layout state dict's shapes (any width, so
    small test files load too); the rest is SD's."""
    levels = sorted({int(key.split(".")[2]) for key in state if key.startswith("encoder.down.")})
    if not levels:
        raise KeyError("encoder.down.*")
    channels = [int(state[f"encoder.down.{level}.block.0.conv1.weight"].shape[0]) for level in levels]
    blocks = {int(key.split(".")[4]) for key in state if key.startswith("encoder.down.0.block.")}
    return dict(
        SD_VAE_CONFIG,
        block_out_channels=channels,
        down_block_types=["DownEncoderBlock2D"] * len(levels),
        up_block_types=["UpDecoderBlock2D"] * len(levels),
        layers_per_block=len(blocks),
        in_channels=int(state["encoder.conv_in.weight"].shape[1]),
        out_channels=int(state["decoder.conv_out.weight"].shape[0]),
        latent_channels=int(state["quant_conv.weight"].shape[0]) // 2,
        norm_num_groups=min(32, channels[0]),
    )


def ldm_consumed_keys(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, str]:
    """``{diffusers key: original key}`` for what ``convert_ldm_vae_checkpoint`` takes from ``state``.

    Found by running the converter on numbered one-element stand-ins (its renames and reshapes leave them
    alone), so originals it silently skips show up as unconsumed.
    """
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    names = list(state)
    tags = {name: torch.tensor([float(index)]) for index, name in enumerate(names)}
    converted = convert_ldm_vae_checkpoint(tags, dict(config))
    return {key: names[int(value.reshape(-1)[0])] for key, value in converted.items()}


def _meta_vae(config: Mapping[str, Any]) -> AutoencoderKL:
    with torch.device("meta"):
        return AutoencoderKL(**{key: value for key, value in config.items() if not key.startswith("_")})


def sd_vae_from_state_dict(
    state: Mapping[str, torch.Tensor],
    config: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = torch.float32,
    source: str = "state dict",
) -> AutoencoderKL:
    """An ``AutoencoderKL`` from a VAE state dict in the original (LDM) or diffusers layout.

    Strict: every tensor consumed exactly once with the model's shape; built on the meta device and filled only
    after every check. ``config`` None: SD's (diffusers layout) or read from the shapes (original layout).
    Raises :class:`SDVAEError` naming ``source`` for another family or a damaged file.
    """
    path = Path(source)
    keys = list(state)
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    reason = _other_family(path, keys, shapes)
    if reason is not None:
        raise SDVAEError(f"{reason} {_HINT}")
    vae_state = _strip_ldm_prefix(state)
    if is_ldm_layout(vae_state):
        try:
            config = dict(config or sd_vae_config_from_ldm(vae_state))
        except KeyError as error:
            raise SDVAEError(
                f"{source}: an original-layout VAE without {error}: the file is incomplete. {_HINT}"
            ) from None
        consumed = ldm_consumed_keys(vae_state, config)
        leftover = sorted(set(vae_state) - set(consumed.values()))
        if leftover:
            raise SDVAEError(
                f"{source}: {len(leftover)} tensors are not part of an SD 1.x VAE (e.g. {', '.join(leftover[:3])}). "
                f"{_HINT}"
            )
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        vae_state = convert_ldm_vae_checkpoint(vae_state, config)
    else:
        config = dict(config or SD_VAE_CONFIG)
    if config.get("latent_channels", 4) != 4:
        raise SDVAEError(f"{source}: a VAE with {config['latent_channels']} latent channels, not 4. {_HINT}")
    vae = _meta_vae(config)
    vae_state = vae._fix_state_dict_keys_on_load(dict(vae_state))  # query/key/value/proj_attn -> to_q/...
    # Original-layout and old files store the attention projections as 1x1 convolutions.
    expected = {key: tuple(value.shape) for key, value in vae.state_dict().items()}
    for key, value in list(vae_state.items()):
        want = expected.get(key)
        if want is not None and value.ndim > len(want) and tuple(value.shape) == (*want, 1, 1)[: value.ndim]:
            vae_state[key] = value.reshape(want)
    missing = sorted(set(expected) - set(vae_state))
    unexpected = sorted(set(vae_state) - set(expected))
    wrong = [key for key in expected if key in vae_state and tuple(vae_state[key].shape) != expected[key]]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            key = wrong[0]
            got, want = list(vae_state[key].shape), list(expected[key])
            details.append(f"{len(wrong)} of another shape (e.g. {key}: {got}, want {want})")
        raise SDVAEError(f"{source} is not an SD 1.x VAE: tensors {'; '.join(details)}. {_HINT}")
    vae.load_state_dict({key: vae_state[key] for key in expected}, strict=True, assign=True)
    return place(vae, device, dtype)


def _read_folder_config(folder: Path) -> dict[str, Any]:
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SDVAEError(f"{config_file} cannot be read as a diffusers config ({error}). {_HINT}") from error
    kind = config.get("_class_name", "AutoencoderKL")
    if kind != "AutoencoderKL":
        raise SDVAEError(f"{folder} holds a {kind}, not the SD 1.x AutoencoderKL. {_HINT}")
    if config.get("latent_channels", 4) != 4:
        raise SDVAEError(f"{folder} is a VAE with {config['latent_channels']} latent channels, not 4. {_HINT}")
    scale = config.get("scaling_factor", LATENT_SCALE)
    if abs(float(scale) - LATENT_SCALE) > 1e-6:
        family = " (the SDXL VAE's)" if abs(float(scale) - 0.13025) < 1e-6 else ""
        raise SDVAEError(f"{folder}: scaling factor {scale}{family}; the SD 1.x VAE's is {LATENT_SCALE}. {_HINT}")
    return {key: value for key, value in config.items() if not key.startswith("_")}


def load_sd_vae(
    path: PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = torch.float32
) -> AutoencoderKL:
    """Load sd-vae-ft-mse from a single file (original or diffusers layout; ``.safetensors``, ``.ckpt``,
    ``.pt``, ``.bin``) or a diffusers folder, refusing other VAE families with a message naming the file."""
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SDVAEError(f"{path} is a folder without config.json, not a diffusers VAE folder. {_HINT}")
        config = _read_folder_config(path)
        for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
            if (path / name).is_file():
                weights = path / name
                break
        else:
            raise SDVAEError(f"{path} has no diffusion_pytorch_model.safetensors (or .bin). {_HINT}")
        state = read_state_dict_file(weights, "VAE", _HINT, SDVAEError)
        return sd_vae_from_state_dict(state, config, device, dtype, source=str(weights))
    state = read_state_dict_file(path, "VAE", _HINT, SDVAEError, unwrap=("state_dict",))
    return sd_vae_from_state_dict(state, None, device, dtype, source=str(path))
