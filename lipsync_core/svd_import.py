"""Import Stable Video Diffusion from the single-file checkpoints users keep for ComfyUI.

``svd.safetensors`` / ``svd_xt.safetensors`` / ``svd_xt_1_1.safetensors`` hold the original
(generative-models) key layout:

* ``model.diffusion_model.*`` -- the spatio-temporal UNet (openaimodel layout: ``input_blocks``,
  ``middle_block``, ``output_blocks``, ``time_stack`` for the temporal parts);
* ``first_stage_model.*`` -- the VAE with the temporal decoder;
* ``conditioner.*`` -- the CLIP-vision image encoder. SayAnything replaces the CLIP-image context with
  audio tokens, so this part is knowingly ignored.

The mapping to diffusers' module names is written here key by key (rules below). The tests prove it
against ComfyUI 0.3.75's own SVD model definition: every original UNet/VAE key is consumed, every
parameter of our modules is filled, shapes agree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .configs import VAE_PRESETS, SayAnythingConfig, build_vae
from .models import SayAnythingModel
from .models.audio_projection import AudioProjection
from .models.id_guider import IDGuider
from .models.unet import SayAnythingUNet, widen_conv_in

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."


class SVDImportError(ValueError):
    """A file that cannot be imported as Stable Video Diffusion; the message names the file."""


# ----------------------------------------------------------------------------------------------------
# Key mapping: original -> diffusers

# ResBlock with a temporal stack (UNet VideoResBlock). The VAE decoder's VideoResBlock uses the
# plain-ResnetBlock names for its spatial half (norm1, conv1, ...), handled in _vae_resnet.
_UNET_RESNET = {
    "in_layers.0": "spatial_res_block.norm1",
    "in_layers.2": "spatial_res_block.conv1",
    "emb_layers.1": "spatial_res_block.time_emb_proj",
    "out_layers.0": "spatial_res_block.norm2",
    "out_layers.3": "spatial_res_block.conv2",
    "skip_connection": "spatial_res_block.conv_shortcut",
    "time_stack.in_layers.0": "temporal_res_block.norm1",
    "time_stack.in_layers.2": "temporal_res_block.conv1",
    "time_stack.emb_layers.1": "temporal_res_block.time_emb_proj",
    "time_stack.out_layers.0": "temporal_res_block.norm2",
    "time_stack.out_layers.3": "temporal_res_block.conv2",
    "time_mixer": "time_mixer",
}

# SpatialVideoTransformer -> TransformerSpatioTemporalModel (inner block names are shared).
_UNET_TRANSFORMER = {
    "norm": "norm",
    "proj_in": "proj_in",
    "proj_out": "proj_out",
    "transformer_blocks": "transformer_blocks",
    "time_stack": "temporal_transformer_blocks",
    "time_pos_embed.0": "time_pos_embed.linear_1",
    "time_pos_embed.2": "time_pos_embed.linear_2",
    "time_mixer": "time_mixer",
}

_UNET_TOP = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "label_emb.0.0": "add_embedding.linear_1",
    "label_emb.0.2": "add_embedding.linear_2",
    "input_blocks.0.0": "conv_in",
    "out.0": "conv_norm_out",
    "out.2": "conv_out",
}


def _replace_prefix(rest: str, table: dict[str, str]) -> str | None:
    """Map the longest table prefix of ``rest`` (matched at a dot boundary)."""
    for old in sorted(table, key=len, reverse=True):
        if rest == old or rest.startswith(old + "."):
            return table[old] + rest[len(old) :]
    return None


def svd_unet_key(key: str, layers_per_block: int = 2) -> str:
    """diffusers ``UNetSpatioTemporalConditionModel`` name of an original UNet key (without prefix).

    ``input_blocks.0`` is conv_in; then per resolution ``layers_per_block`` (resnet, attention) pairs and
    one downsampler; ``middle_block`` is resnet, attention, resnet; ``output_blocks`` run from the
    deepest resolution up with ``layers_per_block + 1`` resnets each, then an upsampler.
    """
    mapped = _replace_prefix(key, _UNET_TOP)
    if mapped is not None:
        return mapped
    match = re.fullmatch(r"input_blocks\.(\d+)\.(\d+)\.(.+)", key)
    if match:
        index, part, rest = int(match[1]), int(match[2]), match[3]
        level, slot = divmod(index - 1, layers_per_block + 1)
        if slot == layers_per_block:  # the downsampler closing this resolution
            if part == 0 and rest.startswith("op."):
                return f"down_blocks.{level}.downsamplers.0.conv.{rest[3:]}"
        elif part == 0:
            return _mapped_or_fail(key, f"down_blocks.{level}.resnets.{slot}.", rest, _UNET_RESNET)
        elif part == 1:
            return _mapped_or_fail(key, f"down_blocks.{level}.attentions.{slot}.", rest, _UNET_TRANSFORMER)
    match = re.fullmatch(r"middle_block\.(\d+)\.(.+)", key)
    if match:
        part, rest = int(match[1]), match[2]
        if part in (0, 2):
            return _mapped_or_fail(key, f"mid_block.resnets.{part // 2}.", rest, _UNET_RESNET)
        if part == 1:
            return _mapped_or_fail(key, "mid_block.attentions.0.", rest, _UNET_TRANSFORMER)
    match = re.fullmatch(r"output_blocks\.(\d+)\.(\d+)\.(.+)", key)
    if match:
        index, part, rest = int(match[1]), int(match[2]), match[3]
        level, slot = divmod(index, layers_per_block + 1)
        if part == 0:
            return _mapped_or_fail(key, f"up_blocks.{level}.resnets.{slot}.", rest, _UNET_RESNET)
        # Part 1 is the attention where the resolution has one, else the upsampler; part 2 the upsampler.
        if rest.startswith("conv."):
            return f"up_blocks.{level}.upsamplers.0.{rest}"
        if part == 1:
            return _mapped_or_fail(key, f"up_blocks.{level}.attentions.{slot}.", rest, _UNET_TRANSFORMER)
    raise KeyError(f"unknown Stable Video Diffusion UNet key {UNET_PREFIX}{key}")


def _mapped_or_fail(key: str, prefix: str, rest: str, table: dict[str, str]) -> str:
    mapped = _replace_prefix(rest, table)
    if mapped is None:
        raise KeyError(f"unknown Stable Video Diffusion UNet key {UNET_PREFIX}{key}")
    return prefix + mapped


_VAE_TOP = {"conv_in": "conv_in", "norm_out": "conv_norm_out", "conv_out": "conv_out"}
_VAE_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
_VAE_TEMPORAL = {
    "time_stack.in_layers.0": "temporal_res_block.norm1",
    "time_stack.in_layers.2": "temporal_res_block.conv1",
    "time_stack.out_layers.0": "temporal_res_block.norm2",
    "time_stack.out_layers.3": "temporal_res_block.conv2",
}


def _vae_resnet(key: str, prefix: str, rest: str, temporal: bool) -> str:
    if temporal:
        if rest == "mix_factor":
            return prefix + "time_mixer.mix_factor"
        mapped = _replace_prefix(rest, _VAE_TEMPORAL)
        if mapped is not None:
            return prefix + mapped
        prefix += "spatial_res_block."
    mapped = _replace_prefix(rest, _VAE_RESNET)
    if mapped is None:
        raise KeyError(f"unknown Stable Video Diffusion VAE key {VAE_PREFIX}{key}")
    return prefix + mapped


def svd_vae_key(key: str, num_levels: int = 4) -> str:
    """diffusers ``AutoencoderKLTemporalDecoder`` name of an original VAE key (without prefix).

    The original decoder indexes ``up.{i}`` by resolution (``up.{num_levels-1}`` runs first); diffusers
    indexes ``up_blocks`` in execution order, so ``up.{i}`` is ``up_blocks.{num_levels-1-i}``.
    """
    part, _, rest = key.partition(".")
    if part not in ("encoder", "decoder"):
        raise KeyError(f"unknown Stable Video Diffusion VAE key {VAE_PREFIX}{key}")
    temporal = part == "decoder"
    if temporal and re.fullmatch(r"conv_out\.time_mix_conv\.(weight|bias)", rest):
        return "decoder.time_conv_out." + rest.rsplit(".", 1)[1]
    match = re.fullmatch(r"(conv_in|norm_out|conv_out)\.(weight|bias)", rest)
    if match:
        return f"{part}.{_VAE_TOP[match[1]]}.{match[2]}"
    match = re.fullmatch(r"mid\.block_(\d)\.(.+)", rest)
    if match:
        return _vae_resnet(key, f"{part}.mid_block.resnets.{int(match[1]) - 1}.", match[2], temporal)
    match = re.fullmatch(r"mid\.attn_1\.(\w+)\.(weight|bias)", rest)
    if match and match[1] in _VAE_ATTENTION:
        return f"{part}.mid_block.attentions.0.{_VAE_ATTENTION[match[1]]}.{match[2]}"
    match = re.fullmatch(r"down\.(\d+)\.block\.(\d+)\.(.+)", rest)
    if match and part == "encoder":
        return _vae_resnet(key, f"encoder.down_blocks.{match[1]}.resnets.{match[2]}.", match[3], temporal=False)
    match = re.fullmatch(r"down\.(\d+)\.downsample\.conv\.(weight|bias)", rest)
    if match and part == "encoder":
        return f"encoder.down_blocks.{match[1]}.downsamplers.0.conv.{match[2]}"
    match = re.fullmatch(r"up\.(\d+)\.block\.(\d+)\.(.+)", rest)
    if match and part == "decoder":
        level = num_levels - 1 - int(match[1])
        return _vae_resnet(key, f"decoder.up_blocks.{level}.resnets.{match[2]}.", match[3], temporal=True)
    match = re.fullmatch(r"up\.(\d+)\.upsample\.conv\.(weight|bias)", rest)
    if match and part == "decoder":
        return f"decoder.up_blocks.{num_levels - 1 - int(match[1])}.upsamplers.0.conv.{match[2]}"
    raise KeyError(f"unknown Stable Video Diffusion VAE key {VAE_PREFIX}{key}")


def _is_attention_projection(diffusers_key: str) -> bool:
    """VAE mid-block attention q/k/v/out: 1x1 convolutions in the original, linear layers in diffusers."""
    return ".mid_block.attentions.0.to_" in diffusers_key and diffusers_key.endswith(".weight")


def svd_key_map(keys: Iterable[str], layers_per_block: int = 2, vae_levels: int = 4) -> tuple[dict, dict, list]:
    """Split the keys of a single-file SVD checkpoint: ``(unet_map, vae_map, ignored)``.

    ``unet_map`` / ``vae_map`` go from the full original key to the diffusers module key; ``ignored``
    lists everything else (``conditioner.*``: CLIP vision). An unknown UNet or VAE key raises ``KeyError``.
    """
    unet_map, vae_map, ignored = {}, {}, []
    for key in keys:
        if key.startswith(UNET_PREFIX):
            unet_map[key] = svd_unet_key(key[len(UNET_PREFIX) :], layers_per_block)
        elif key.startswith(VAE_PREFIX):
            vae_map[key] = svd_vae_key(key[len(VAE_PREFIX) :], vae_levels)
        else:  # conditioner.* (CLIP vision and its own VAE-encoder copy), training leftovers
            ignored.append(key)
    return unet_map, vae_map, ignored


# ----------------------------------------------------------------------------------------------------
# Loading


def _open_svd(path: Path):
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file; put svd_xt.safetensors (or svd_xt_1_1) in ComfyUI's models/checkpoints"
        )
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as error:
        raise SVDImportError(
            f"{path} is not a readable safetensors file ({error}); it may be truncated. "
            "Stable Video Diffusion is imported from svd_xt.safetensors / svd_xt_1_1.safetensors."
        ) from error


def _shapes(handle, prefix: str) -> dict[str, tuple[int, ...]]:
    return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys() if key.startswith(prefix)}


def detect_svd_size(path: str | os.PathLike) -> str:
    """The preset (``"full"`` for SVD, ``"tiny"`` for test files) whose UNet and VAE shapes the file has."""
    path = Path(path)
    with _open_svd(path) as handle:
        unet_shapes = _shapes(handle, UNET_PREFIX)
        vae_shapes = _shapes(handle, VAE_PREFIX)
    if not unet_shapes:
        raise SVDImportError(
            f"{path} has no {UNET_PREFIX}* tensors: it is not a single-file Stable Video Diffusion checkpoint "
            "(use svd_xt.safetensors or svd_xt_1_1.safetensors, not a diffusers folder file)"
        )
    for size in ("full", "tiny"):
        config = SayAnythingConfig.preset(size)
        if _unet_shapes_match(unet_shapes, config) and _vae_shapes_match(vae_shapes, VAE_PRESETS[size]):
            return size
    conv_in = unet_shapes.get(UNET_PREFIX + "input_blocks.0.0.weight")
    raise SVDImportError(
        f"{path}: the UNet/VAE shapes are not Stable Video Diffusion's (conv_in {list(conv_in or [])}); "
        "expected SVD / SVD-XT (image-to-video, 8 input channels, 320-1280 channels)"
    )


def _unet_shapes_match(shapes: dict[str, tuple[int, ...]], config: SayAnythingConfig) -> bool:
    try:
        unet_map, _, _ = svd_key_map(shapes, config.unet.layers_per_block)
    except KeyError:
        return False
    expected = _meta_state_shapes(SayAnythingUNet, config.unet.diffusers_kwargs() | {"in_channels": 8})
    return {unet_map[k]: s for k, s in shapes.items()} == expected


def _vae_shapes_match(shapes: dict[str, tuple[int, ...]], vae_config: dict) -> bool:
    levels = len(vae_config["block_out_channels"])
    try:
        _, vae_map, _ = svd_key_map(shapes, vae_levels=levels)
    except KeyError:
        return False
    expected = _meta_vae_shapes(vae_config)
    expected.pop("quant_conv.weight", None)
    expected.pop("quant_conv.bias", None)
    mapped = {}
    for key, shape in shapes.items():
        target = vae_map[key]
        mapped[target] = shape[:2] if _is_attention_projection(target) else shape
    return mapped == expected


def _meta_state_shapes(cls, kwargs) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        module = cls(**kwargs)
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def _meta_vae_shapes(vae_config: dict) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        module = build_vae(vae_config)
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def _read(handle, key: str, dtype: torch.dtype | None, path: Path) -> torch.Tensor:
    try:
        tensor = handle.get_tensor(key)
    except SafetensorError as error:
        raise SVDImportError(f"{path}: tensor {key} cannot be read ({error}); the file is damaged") from error
    return tensor.to(dtype) if dtype is not None else tensor


def load_svd_unet_state_dict(
    path: str | os.PathLike, layers_per_block: int = 2, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """The UNet of a single-file SVD checkpoint as a diffusers-layout state dict (8 input channels)."""
    path = Path(path)
    with _open_svd(path) as handle:
        keys = [key for key in handle.keys() if key.startswith(UNET_PREFIX)]
        unet_map, _, _ = svd_key_map(keys, layers_per_block)
        return {unet_map[key]: _read(handle, key, dtype, path) for key in keys}


def load_svd_vae(
    path: str | os.PathLike,
    dtype: torch.dtype | None = torch.float32,
    device: str | torch.device = "cpu",
    size: str | None = None,
):
    """The temporal VAE (diffusers ``AutoencoderKLTemporalDecoder``) of a single-file SVD checkpoint.

    The original has no quant_conv (diffusers has a 1x1 one): it is set to the identity, exactly the
    original computation.
    """
    path = Path(path)
    size = size or detect_svd_size(path)
    vae_config = VAE_PRESETS[size]
    with torch.device("meta"):
        vae = build_vae(vae_config)
    with _open_svd(path) as handle:
        keys = [key for key in handle.keys() if key.startswith(VAE_PREFIX)]
        _, vae_map, _ = svd_key_map(keys, vae_levels=len(vae_config["block_out_channels"]))
        state = {}
        for key in keys:
            target = vae_map[key]
            tensor = _read(handle, key, dtype, path)
            state[target] = tensor.flatten(1) if _is_attention_projection(target) else tensor
    channels = vae.quant_conv.weight.shape[0]
    reference = next(iter(state.values()))
    state["quant_conv.weight"] = torch.eye(channels, dtype=reference.dtype).reshape(channels, channels, 1, 1)
    state["quant_conv.bias"] = torch.zeros(channels, dtype=reference.dtype)
    vae.load_state_dict(state, strict=True, assign=True)
    return vae.to(device).eval()


def model_from_svd(
    path: str | os.PathLike,
    dtype: torch.dtype | None = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    size: str | None = None,
) -> tuple[SayAnythingModel, object]:
    """A starting SayAnything model from Stable Video Diffusion weights: ``(model, vae)``.

    The UNet takes SVD's weights (conv_in widened with a zero mask channel); the audio projection and
    ID-Guider are freshly initialised from ``seed`` (the ID-Guider's outputs at zero), so the model
    starts out computing SVD's UNet on the masked video. ``size`` is detected from the file's shapes.
    """
    path = Path(path)
    size = size or detect_svd_size(path)
    config = SayAnythingConfig.preset(size)
    with torch.device("meta"):
        unet = SayAnythingUNet(**config.unet.diffusers_kwargs())
    state = load_svd_unet_state_dict(path, config.unet.layers_per_block, dtype)
    unet.load_state_dict(widen_conv_in(state, config.unet.in_channels), strict=True, assign=True)
    model = SayAnythingModel.__new__(SayAnythingModel)
    torch.nn.Module.__init__(model)
    model.config = config
    model.unet = unet
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model.audio_projection = AudioProjection(config.audio, config.unet.cross_attention_dim)
    model.id_guider = IDGuider(config.id_guider, config.unet.block_out_channels)
    torch.random.set_rng_state(generator_state)
    model.to(device=device, dtype=dtype if dtype is not None else unet.dtype)
    vae = load_svd_vae(path, dtype=dtype, device=device, size=size)
    return model.eval(), vae
