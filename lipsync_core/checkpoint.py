"""Model files: the one loader (``load``) that recognises a file's model family, and the SayAnything format.

``load(path)`` reads a file's header, finds the family it belongs to (``FAMILIES``) and returns a
``LoadedModel``: what the orchestrator, the nodes and ``run`` use, whatever the family. A family is a
recogniser and a loader (``family.ModelFamily``); SayAnything's is below, MuseTalk 1.5's (``musetalk``) is
registered here too, and another family registers its own (``register_family``). A pickled state dict
(``.pth``, MuseTalk's upstream file) is read for its keys with ``torch.load(weights_only=True)``, nothing else.

The SayAnything file: one safetensors file, config in the metadata, strict loading.

Keys: ``unet.*``, ``audio_projection.*``, ``id_guider.*``, ``style_encoder.*`` for a model with a
speaking-style input, and optionally ``vae.*`` (a model trained with
its own small VAE, such as the toy demo, ships it). Metadata::

    {"format": "sayanything", "format_version": "1", "config": <SayAnythingConfig JSON>,
     "defaults": <ModelDefaults JSON: what the model was trained with and wants at inference>,
     "vae_config": <diffusers AutoencoderKLTemporalDecoder config JSON, only with vae.* keys>}

Files written before ``defaults`` existed load with ``ModelDefaults()``. A loaded model carries its
defaults as ``model.defaults``; ``save_checkpoint`` writes them back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .compat import native_bf16
from .configs import CheckpointError, ModelDefaults, SayAnythingConfig, build_vae
from .family import FAMILIES, LoadedModel, ModelFamily, register_family
from .models import SayAnythingModel
from .models.musetalk import read_state_dict_file
from .musetalk import MUSETALK_FAMILY
from .svd_import import load_svd_vae

FORMAT = "sayanything"
FORMAT_VERSION = "1"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def load(
    path: str | os.PathLike,
    vae: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> LoadedModel:
    """The model in ``path``, of whichever family its header names: ``LoadedModel``.

    ``vae``: a file to take the VAE from where the model file has none (SayAnything: your ``svd_xt.safetensors``).
    ``dtype`` None keeps the stored precision. A file of no known family is one clear error naming the families.
    """
    path = Path(path)
    metadata, keys = _read_header(path)
    for family in FAMILIES:
        if family.recognises(path, metadata, keys):
            return family.load(path, vae=vae, device=device, dtype=parse_dtype(dtype))
    known = "; ".join(f"{family.name} ({family.files})" for family in FAMILIES)
    hint = ""
    if any(key.startswith("model.diffusion_model.") for key in keys) and any(k.startswith("first_stage_model.")
                                                                             for k in keys):
        hint = (" It looks like a Stable Video Diffusion checkpoint: pick it as the SVD checkpoint (its VAE is used), "
                "or make a SayAnything model from it with `python -m lipsync_core init --svd`.")
    raise CheckpointError(
        f"{path} is not a model file of a family this pack knows (metadata format="
        f"{metadata.get('format')!r}, {len(keys)} tensors). The pack runs: {known}.{hint}"
    )


# Pickled state dicts (torch.save): read only as tensors (weights_only), memory-mapped where torch can.
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_PICKLE_HINT = (
    "The pack reads a pickled .pth only as MuseTalk 1.5's UNet (musetalkV15/unet.pth with musetalk.json beside it, "
    "from TMElyralab/MuseTalk on Hugging Face); other models are .safetensors."
)


def _read_header(path: Path) -> tuple[dict[str, str], list[str]]:
    """A file's metadata and tensor names: a safetensors header, or a pickle's keys (no metadata)."""
    if path.suffix.lower() in PICKLE_SUFFIXES and path.is_file():
        return {}, list(read_state_dict_file(path, "model", _PICKLE_HINT, CheckpointError))
    with _open(path) as handle:
        return handle.metadata() or {}, list(handle.keys())


def _load_sayanything(path: Path, vae=None, device: str | torch.device = "cpu", dtype=None) -> LoadedModel:
    model, stored_vae = load_checkpoint(path, device=device, dtype=dtype)
    if vae is not None:
        stored_vae = load_svd_vae(vae, device=device, dtype=dtype or model.dtype)
    if stored_vae is None:
        raise CheckpointError(
            f"{path} holds no VAE; choose your SVD checkpoint (svd_xt.safetensors in models/checkpoints) "
            "so its VAE is used"
        )
    return LoadedModel(model=model, vae=stored_vae.eval(), path=str(path))


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"fp16"`` / ``"bf16"`` / ``"fp32"`` (or a torch dtype, or None) -> torch dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown precision {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_dtype(precision: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """``"auto"`` -> bf16 on a CUDA GPU that computes it natively (``compat.native_bf16``), else fp16 there,
    fp32 on the CPU; names as ``parse_dtype``."""
    if precision in (None, "auto"):
        device = torch.device(device)
        if device.type == "cuda":
            return torch.bfloat16 if native_bf16(device) else torch.float16
        return torch.float32
    return parse_dtype(precision)


def save_checkpoint(
    path: str | os.PathLike,
    model: SayAnythingModel,
    vae=None,
    dtype: str | torch.dtype = torch.float32,
    overwrite: bool = False,
    defaults: ModelDefaults | None = None,
) -> Path:
    """Write ``model`` (and ``vae`` if given) to ``path`` with weights stored in ``dtype``.

    ``defaults``: the settings the model wants at inference (default: ``model.defaults`` if it has
    them, else ``ModelDefaults()``).

    Refuses to replace an existing file unless ``overwrite``; writes to a temporary name first so an
    interrupted save never leaves a half-written file under the real name.
    """
    path = Path(path)
    dtype = parse_dtype(dtype)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another name or pass overwrite=True")
    tensors: dict[str, torch.Tensor] = {}
    for part in model.parts:
        for key, value in getattr(model, part).state_dict().items():
            tensors[f"{part}.{key}"] = value.detach().to("cpu", dtype).contiguous()
    defaults = defaults or getattr(model, "defaults", None) or ModelDefaults()
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_json(),
                "defaults": defaults.to_json()}
    if vae is not None:
        for key, value in vae.state_dict().items():
            tensors[f"vae.{key}"] = value.detach().to("cpu", dtype).contiguous()
        metadata["vae_config"] = json.dumps(_plain_config(vae.config))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    os.replace(partial, path)
    return path


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a SayAnything checkpoint, validated (cheap: reads the header only)."""
    path = Path(path)
    with _open(path) as handle:
        return _check_metadata(path, handle.metadata())


def read_model_defaults(path: str | os.PathLike) -> ModelDefaults:
    """The inference defaults stored in a checkpoint (``ModelDefaults()`` for files that have none)."""
    path = Path(path)
    return _parse_defaults(path, read_checkpoint_metadata(path))


def _parse_defaults(path: Path, metadata: dict[str, str]) -> ModelDefaults:
    try:
        return ModelDefaults.from_json(metadata.get("defaults"))
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: the defaults in its metadata are invalid: {error}") from error


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None
) -> tuple[SayAnythingModel, object | None]:
    """Load ``(model, vae_or_None)``; ``dtype`` None keeps the stored precision; ``model.defaults``
    holds the file's :class:`ModelDefaults`.

    Strict: every tensor of the model must be in the file with its shape, and the file may hold
    nothing else. Errors name the file and what is wrong.
    """
    path = Path(path)
    dtype = parse_dtype(dtype)
    with _open(path) as handle:
        metadata = _check_metadata(path, handle.metadata())
        try:
            config = SayAnythingConfig.from_json(metadata["config"])
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{path}: the model config in its metadata is invalid: {error}") from error
        defaults = _parse_defaults(path, metadata)
        with torch.device("meta"):
            model = SayAnythingModel(config)
            vae = build_vae(json.loads(metadata["vae_config"])) if "vae_config" in metadata else None
        expected = {f"{part}.{k}": v for part in model.parts for k, v in getattr(model, part).state_dict().items()}
        if vae is not None:
            expected.update({f"vae.{k}": v for k, v in vae.state_dict().items()})
        _check_keys_and_shapes(path, handle, expected)
        tensors = {}
        for key in expected:
            try:
                tensor = handle.get_tensor(key)
            except SafetensorError as error:
                raise CheckpointError(f"{path}: tensor {key} cannot be read ({error}); the file is damaged") from error
            tensors[key] = tensor.to(device, dtype or tensor.dtype)
    for part in model.parts:
        prefix = part + "."
        getattr(model, part).load_state_dict(
            {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True, assign=True
        )
    if vae is not None:
        vae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("vae.")}, strict=True, assign=True)
        vae.eval()
    model.defaults = defaults
    return model.eval(), vae


def _open(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as error:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({size} bytes; {error}); it may be truncated "
            "(an interrupted download or copy) or in another format. SayAnything loads .safetensors only."
        ) from error


def _check_metadata(path: Path, metadata: dict[str, str] | None) -> dict[str, str]:
    metadata = metadata or {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a SayAnything checkpoint (metadata format="
            f"{metadata.get('format')!r}, expected {FORMAT!r}). For Stable Video Diffusion weights "
            "use `python -m lipsync_core init --svd` to make a SayAnything model from them."
        )
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: SayAnything checkpoint format version {metadata.get('format_version')!r} is not "
            f"supported (this code reads version {FORMAT_VERSION}); update the node pack"
        )
    if "config" not in metadata:
        raise CheckpointError(f"{path}: the SayAnything metadata has no model config")
    return metadata


def _check_keys_and_shapes(path: Path, handle, expected: dict[str, torch.Tensor]) -> None:
    present = set(handle.keys())
    missing = sorted(set(expected) - present)
    unexpected = sorted(present - set(expected))
    if missing:
        raise CheckpointError(
            f"{path}: {len(missing)} tensors of the model are missing, e.g. {', '.join(missing[:3])}; "
            "the file is incomplete or was written by other code"
        )
    if unexpected:
        raise CheckpointError(
            f"{path}: {len(unexpected)} tensors do not belong to the model its config describes, "
            f"e.g. {', '.join(unexpected[:3])}"
        )
    for key, reference in expected.items():
        shape = tuple(handle.get_slice(key).get_shape())
        if shape != tuple(reference.shape):
            raise CheckpointError(
                f"{path}: tensor {key} has shape {list(shape)} but the config in the file needs "
                f"{list(reference.shape)}; the weights and the config do not match"
            )


def _plain_config(config) -> dict:
    """A diffusers FrozenDict config as plain JSON-able data (drops private entries)."""
    return {
        key: (list(value) if isinstance(value, tuple) else value)
        for key, value in dict(config).items()
        if not key.startswith("_")
    }


register_family(ModelFamily(
    name="SayAnything",
    files=".safetensors written by this pack's init, train or toy commands",
    recognises=lambda path, metadata, keys: metadata.get("format") == FORMAT,
    load=_load_sayanything,
))
register_family(MUSETALK_FAMILY)
