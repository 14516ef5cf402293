"""MuseTalk 1.5: a second model family, run as one UNet call per frame on a 256 px face crop.

What MuseTalk is (facts from TMElyralab/MuseTalk; the code here is ours, written from the formulas):

* **UNet.** A stock diffusers ``UNet2DConditionModel`` (SD-1.x block types, blocks 320/640/1280/1280,
  ``layers_per_block`` 2, ``attention_head_dim`` 8, which diffusers reads as 8 heads at every level) with 8 input
  channels (VAE latents of the masked crop, then of the reference crop) and 4 output channels, run once at
  timestep 0. Its cross-attention width is 384: the audio tokens go in unprojected.
* **Audio tokens.** All 5 hidden states (embeddings + 4 layers) of the multilingual Whisper tiny encoder at
  50 Hz. Video frame ``i`` takes 10 encoder frames starting at ``floor(i * 50 / fps)`` in the states
  left-padded with 4 zero frames (encoder frames ``2i-4 ... 2i+5`` at 25 fps; zeros past the audio's end),
  flattened time-major to 50 tokens of 384 plus a sinusoidal position encoding.
* **VAE.** sd-vae-ft-mse (diffusers ``AutoencoderKL``, latents x 0.18215). The masked input is the crop with
  its lower half (rows ``>= S // 2``) black. Upstream draws ``latent_dist.sample()``; we use the posterior
  mean (``mode()``) unless a ``torch.Generator`` is given (then a seeded sample, upstream's behaviour), so a
  run is deterministic and the in-memory and streamed paths agree (as the SVD canvas does).
* **Weights.** ``musetalkV15/unet.pth``: a plain pickled state dict (upstream diffusers key names, fp32,
  686 tensors, 849,947,844 parameters) plus ``musetalkV15/musetalk.json`` (the UNet config). We read it with
  ``torch.load(weights_only=True, mmap=True)`` and check every key and shape before anything is loaded, and
  convert it once to one safetensors file (``convert_musetalk``).

Our file: safetensors, keys ``unet.*`` (upstream names under the prefix), metadata
``{"format": "musetalk", "format_version": "1", "config": <UNet2DConditionModel config JSON>}``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from ..audio.fit import as_fps
from ..audio.io import WHISPER_SAMPLE_RATE, Audio, resample

PathLike = str | os.PathLike

FORMAT = "musetalk"
FORMAT_VERSION = "1"

CROP_SIZE = 256  # MuseTalk's face crop (latents 32 x 32)
LATENT_SCALE = 0.18215  # sd-vae-ft-mse's scaling factor
AUDIO_DIM = 384  # Whisper tiny's d_model = the UNet's cross-attention width
AUDIO_LAYERS = 5  # hidden states: embeddings + 4 encoder layers
AUDIO_WINDOW = 10  # encoder frames (50 Hz) per video frame
AUDIO_LEFT_PAD = 4  # zero encoder frames before the audio (the window starts 4 frames early)
AUDIO_TOKENS = AUDIO_WINDOW * AUDIO_LAYERS  # 50
ENCODER_RATE = 50  # Whisper encoder frames per second
SEGMENT_SAMPLES = 30 * WHISPER_SAMPLE_RATE  # Whisper's 30 s input
_HOP, _N_FFT = 160, 400

# Whisper vocabularies: the English-only models (tiny.en, ...) have 51864 tokens, the multilingual 51865+.
_ENGLISH_ONLY_VOCAB = 51864

# musetalkV15/musetalk.json (UNet2DConditionModel, written by diffusers 0.6.0.dev0), "_" keys left out.
_FULL_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": AUDIO_DIM,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

UNET_PRESETS: dict[str, dict[str, Any]] = {
    "full": _FULL_UNET,
    # For tests: the same block types and key layout at two levels of 32/64 channels (GroupNorm's 32 groups
    # need multiples of 32). The cross-attention stays 384 wide: the audio tokens are Whisper tiny's width.
    "tiny": {
        **_FULL_UNET,
        "block_out_channels": [32, 64],
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "sample_size": 32,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    },
}

_UPSTREAM_HINT = (
    "MuseTalk 1.5's UNet is musetalkV15/unet.pth with musetalkV15/musetalk.json from the Hugging Face "
    "repository TMElyralab/MuseTalk."
)


class MuseTalkError(ValueError):
    """A file or input that cannot be used as MuseTalk; the message names the file and what to do."""


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


def _unet_init_parameters() -> set[str]:
    return set(inspect.signature(UNet2DConditionModel.__init__).parameters) - {"self"}


@dataclass
class MuseTalkConfig:
    """A MuseTalk UNet config: ``unet`` holds diffusers ``UNet2DConditionModel`` keyword arguments
    (what ``musetalk.json`` holds, without its ``_class_name`` / ``_diffusers_version`` keys).

    Checked on creation: only ``UNet2DConditionModel`` arguments, 8 input and 4 output channels, a
    cross-attention width of 384 (Whisper tiny's; the tokens are not projected) and 2D block types.
    """

    unet: dict[str, Any] = field(default_factory=lambda: dict(UNET_PRESETS["full"]))
    source: str = field(default="config", compare=False, repr=False)

    def __post_init__(self) -> None:
        self.unet = {key: value for key, value in dict(self.unet).items() if not key.startswith("_")}
        where = self.source
        unknown = sorted(set(self.unet) - _unet_init_parameters())
        if unknown:
            raise MuseTalkError(
                f"{where}: {', '.join(unknown)} {'is not a' if len(unknown) == 1 else 'are not'} "
                f"UNet2DConditionModel setting{'s' if len(unknown) > 1 else ''}; is this musetalk.json? "
                f"{_UPSTREAM_HINT}"
            )
        got = {key: self.unet.get(key, default) for key, default in (("in_channels", 4), ("out_channels", 4))}
        width = self.unet.get("cross_attention_dim", 1280)
        if got["in_channels"] != 8 or got["out_channels"] != 4 or width != AUDIO_DIM:
            raise MuseTalkError(
                f"{where}: in_channels {got['in_channels']}, out_channels {got['out_channels']}, "
                f"cross_attention_dim {width}; a MuseTalk UNet has 8 / 4 / {AUDIO_DIM} (masked + reference latents "
                f"in, latents out, Whisper tiny tokens as context). {_UPSTREAM_HINT}"
            )
        types = [*self.unet.get("down_block_types", ()), *self.unet.get("up_block_types", ())]
        if any("2D" not in name for name in types):
            raise MuseTalkError(f"{where}: block types {types} are not the 2D (SD-1.x) blocks MuseTalk uses.")

    @classmethod
    def preset(cls, name: str) -> MuseTalkConfig:
        """``"full"`` (the released MuseTalk 1.5 UNet) or ``"tiny"`` (tests)."""
        if name not in UNET_PRESETS:
            raise ValueError(f"unknown MuseTalk size {name!r}; choose one of {', '.join(UNET_PRESETS)}")
        return cls(dict(UNET_PRESETS[name]), source=f"MuseTalk preset {name!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> MuseTalkConfig:
        if not isinstance(data, Mapping):
            raise MuseTalkError(f"{source}: a MuseTalk config is a JSON object, got {type(data).__name__}.")
        return cls(dict(data), source=source)

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> MuseTalkConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise MuseTalkError(f"{source} is not valid JSON ({error}). {_UPSTREAM_HINT}") from error
        return cls.from_dict(data, source)

    @classmethod
    def from_file(cls, path: PathLike) -> MuseTalkConfig:
        """Read ``musetalk.json``."""
        path = Path(path)
        if not path.is_file():
            raise MuseTalkError(f"MuseTalk config {path} does not exist. {_UPSTREAM_HINT}")
        return cls.from_json(path.read_text(encoding="utf-8"), source=str(path))

    def to_json(self) -> str:
        return json.dumps(self.unet, sort_keys=True)

    def build_unet(self) -> UNet2DConditionModel:
        """A randomly initialised UNet of this config (under ``torch.device("meta")`` nothing is allocated)."""
        return UNet2DConditionModel(**self.unet)


def as_musetalk_config(config: MuseTalkConfig | Mapping | PathLike | str) -> MuseTalkConfig:
    """A config from a :class:`MuseTalkConfig`, a dict, a preset name or the path of ``musetalk.json``."""
    if isinstance(config, MuseTalkConfig):
        return config
    if isinstance(config, Mapping):
        return MuseTalkConfig.from_dict(config)
    if isinstance(config, str) and config in UNET_PRESETS:
        return MuseTalkConfig.preset(config)
    return MuseTalkConfig.from_file(config)


def meta_state_shapes(config: MuseTalkConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the config's UNet with its shape, built on the meta device (instant)."""
    with torch.device("meta"):
        unet = config.build_unet()
    return {key: tuple(value.shape) for key, value in unet.state_dict().items()}


# --------------------------------------------------------------------------------------------------
# Reading the upstream unet.pth
# --------------------------------------------------------------------------------------------------


def _first_line(error: BaseException) -> str:
    """``Type: first sentence`` of an exception, short enough for a message."""
    lines = str(error).strip().splitlines()
    sentence = lines[0].split(". ")[0].rstrip(".")[:160] if lines else ""
    return f"{type(error).__name__}: {sentence}" if sentence else type(error).__name__


def read_state_dict_file(
    path: PathLike,
    what: str = "MuseTalk UNet",
    hint: str = _UPSTREAM_HINT,
    error: type[Exception] = MuseTalkError,
    unwrap: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` (``torch.load(weights_only=True)``, memory-mapped
    when the file is in torch's zip format) or a ``.safetensors`` file, as ``{name: tensor}``.

    Raises ``error`` (:class:`MuseTalkError` by default) naming the file for a missing, empty, truncated or
    damaged file, a pickle that holds Python objects besides tensors (``weights_only`` refuses them), or
    anything but a flat dict of tensors. ``unwrap``: top-level keys whose dict of tensors is taken instead
    (e.g. ``("state_dict",)`` for a Lightning ``.ckpt``; other top-level entries are then ignored).
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path} does not exist. {hint}")
    size = path.stat().st_size
    if size == 0:
        raise error(f"{path} is empty (0 bytes): an interrupted download? Download it again. {hint}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as failure:
            raise error(
                f"{path} cannot be read as safetensors ({_first_line(failure)}): it is truncated or damaged. "
                f"Download it again. {hint}"
            ) from failure
    with open(path, "rb") as handle:
        is_zip = handle.read(4) == b"PK\x03\x04"  # torch.save's format since torch 1.6; only it can be mapped
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as failure:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(failure))
        culprit = f"e.g. {found[1]}" if found else _first_line(failure)
        raise error(
            f"{path}: torch.load(weights_only=True) refused it because its pickle holds Python objects besides "
            f"tensors ({culprit}). A {what} file holds only tensors, so this is a different kind of file (or was "
            f"saved with extra objects); loading it with weights_only=False would run its code. {hint}"
        ) from failure
    except Exception as failure:  # torch raises RuntimeError, EOFError, KeyError, ... for unreadable files
        raise error(
            f"{path} ({size:,} bytes) cannot be read as a PyTorch file ({_first_line(failure)}): it is truncated or "
            f"damaged (an interrupted download?) or not a torch.save file. Download it again. {hint}"
        ) from failure
    if isinstance(state, Mapping):
        inner = next((state[key] for key in unwrap if isinstance(state.get(key), Mapping)), None)
        state = state if inner is None else inner
    return _as_tensor_dict(path, state, what, hint, error)


def _as_tensor_dict(path: Path, state: Any, what: str, hint: str, error: type[Exception]) -> dict[str, torch.Tensor]:
    if type(state) not in (dict, OrderedDict):  # a Counter or other dict subclass is not a state dict
        kind = type(state)
        name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        raise error(f"{path} holds a {name}, not a state dict of tensors. {hint}")
    wrapped = [key for key, value in state.items() if isinstance(value, Mapping)]
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            detail = (
                f"; the weights seem to be wrapped under {wrapped[:3]} (a training checkpoint)" if wrapped else ""
            )
            raise error(
                f"{path} is not a plain state dict of tensors: {key!r} holds a {type(value).__name__}{detail}. "
                f"A {what} file maps parameter names to tensors. {hint}"
            )
    return dict(state)


def _describe_other_family(state: Mapping[str, torch.Tensor]) -> str | None:
    """What a state dict that is not MuseTalk's UNet looks like, if it is a known family."""
    keys = list(state)

    def has(text: str) -> bool:
        return any(text in key for key in keys)

    if any(key.startswith("model.diffusion_model.") for key in keys):
        kind = "Stable Video Diffusion" if has("time_stack") or has("time_mixer") else "Stable Diffusion"
        return f"a whole {kind} checkpoint in the original single-file layout"
    if has("temporal_transformer_blocks") or has("transformer_in.") or has("motion_modules"):
        return "a video UNet (temporal layers: SVD, AnimateDiff or LatentSync), not MuseTalk's image UNet"
    if (has("encoder.down.0.block") or has("encoder.down_blocks.0.resnets")) and has("decoder."):
        return "a VAE"
    if has("encoder.conv1.weight") or has("encoder.layers.0.self_attn"):
        return "a Whisper model"
    conv_in = state.get("conv_in.weight")
    if conv_in is not None and conv_in.ndim == 4 and conv_in.shape[1] != 8:
        channels = conv_in.shape[1]
        kinds = {4: "a Stable Diffusion (text-to-image) UNet", 9: "a Stable Diffusion inpainting UNet"}
        return f"{kinds.get(channels, 'a UNet')} with {channels} input channels (MuseTalk's has 8)"
    to_k = next((value for key, value in state.items() if key.endswith("attn2.to_k.weight")), None)
    if to_k is not None and to_k.ndim == 2 and to_k.shape[1] != AUDIO_DIM:
        return f"a UNet conditioned on {to_k.shape[1]}-wide tokens (text?), not on Whisper tiny's {AUDIO_DIM}"
    return None


def check_musetalk_state_dict(
    state: Mapping[str, torch.Tensor], config: MuseTalkConfig, source: str = "state dict"
) -> dict[str, tuple[int, ...]]:
    """Check that ``state`` is exactly the UNet of ``config``: every key consumed once with its shape.

    Returns the expected ``{key: shape}``. Raises :class:`MuseTalkError` naming ``source``: for a file of
    another family (say which and which file to use instead), missing or unexpected keys, or wrong shapes
    (the config does not belong to the weights).
    """
    expected = meta_state_shapes(config)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        other = _describe_other_family(state)
        if other is not None:
            raise MuseTalkError(f"{source} is {other}, not MuseTalk's UNet. {_UPSTREAM_HINT}")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise MuseTalkError(
            f"{source} does not hold MuseTalk's UNet for {config.source}: keys {'; '.join(parts)}. "
            f"Either the weights or the config is another model's. {_UPSTREAM_HINT}"
        )
    wrong = [(key, tuple(state[key].shape), shape) for key, shape in expected.items()]
    wrong = [(key, got, want) for key, got, want in wrong if got != want]
    if wrong:
        other = _describe_other_family(state)
        if other is not None:
            raise MuseTalkError(f"{source} is {other}, not MuseTalk's UNet. {_UPSTREAM_HINT}")
        examples = "; ".join(f"{key} is {list(got)} in the file, {list(want)} in the config"
                             for key, got, want in wrong[:3])
        raise MuseTalkError(
            f"{source}: {len(wrong)} tensors have other shapes than {config.source} gives ({examples}). The config "
            f"does not belong to these weights (use the musetalk.json shipped next to the unet.pth)."
        )
    return expected


def place(module: torch.nn.Module, device: str | torch.device, dtype: torch.dtype | None) -> torch.nn.Module:
    """``module`` on ``device`` in ``dtype`` (None: as stored), in eval mode without gradients. The dtype is
    only passed when it changes anything (diffusers logs a warning for every ``to(dtype=...)``)."""
    module = module.to(device)
    if dtype is not None and any(p.dtype != dtype for p in module.parameters()):
        module = module.to(dtype)
    return module.eval().requires_grad_(False)


def musetalk_unet_from_state_dict(
    state: Mapping[str, torch.Tensor],
    config: MuseTalkConfig | Mapping | PathLike | str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    source: str = "state dict",
) -> UNet2DConditionModel:
    """A MuseTalk UNet from upstream-named tensors, checked with :func:`check_musetalk_state_dict` first.

    Built on the meta device and filled by ``load_state_dict(assign=True)`` only after every check, so a bad
    file never leaves a half-loaded model. ``dtype`` None keeps the stored precision.
    """
    config = as_musetalk_config(config)
    expected = check_musetalk_state_dict(state, config, source)
    with torch.device("meta"):
        unet = config.build_unet()
    unet.load_state_dict({key: state[key] for key in expected}, strict=True, assign=True)
    return place(unet, device, dtype)


def load_musetalk_unet(
    unet_path: PathLike,
    config_path_or_dict: MuseTalkConfig | Mapping | PathLike | str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> UNet2DConditionModel:
    """Load upstream's ``unet.pth`` (or a ``.safetensors`` of the same tensors) with its ``musetalk.json``.

    Args:
        unet_path: ``musetalkV15/unet.pth``: a plain pickled state dict, read with ``weights_only=True`` and
            memory-mapped, so it costs no copy in host memory.
        config_path_or_dict: ``musetalk.json``, its dict, a :class:`MuseTalkConfig` or a preset name; None reads
            ``musetalk.json`` next to the weights, else the ``"full"`` preset (the published config).
        device, dtype: where the UNet goes; ``dtype`` None keeps the file's (fp32).
    """
    unet_path = Path(unet_path)
    if config_path_or_dict is None:
        beside = unet_path.with_name("musetalk.json")
        config_path_or_dict = beside if beside.is_file() else "full"
    config = as_musetalk_config(config_path_or_dict)
    if unet_path.suffix == ".safetensors" and _is_our_format(unet_path):
        raise MuseTalkError(f"{unet_path} is a converted MuseTalk file: load it with load_musetalk_safetensors.")
    state = read_state_dict_file(unet_path)
    return musetalk_unet_from_state_dict(state, config, device, dtype, source=str(unet_path))


# --------------------------------------------------------------------------------------------------
# Our safetensors file
# --------------------------------------------------------------------------------------------------


def _is_our_format(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            return (handle.metadata() or {}).get("format") == FORMAT
    except Exception:  # not readable as safetensors: the caller's reader reports it
        return False


def convert_musetalk(
    unet_path: PathLike,
    config_path: MuseTalkConfig | Mapping | PathLike | str | None,
    output_path: PathLike,
    overwrite: bool = False,
    dtype: torch.dtype | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Convert upstream's ``unet.pth`` + ``musetalk.json`` into one safetensors file (keys ``unet.*``).

    Checked exactly as :func:`load_musetalk_unet` checks before anything is written; written under a
    ``.partial`` name and renamed when complete, so an interrupted run never leaves a file under the real
    name. ``dtype`` None keeps fp32 (``torch.float16`` halves the 3.4 GB). ``metadata``: extra string
    entries (e.g. the inference ``defaults``), added after ours. Memory: safetensors serialises the whole
    file in host memory once (about the file's size).
    """
    from safetensors.torch import save_file

    output_path = Path(output_path)
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path} already exists; choose another name or pass overwrite=True")
    unet_path = Path(unet_path)
    if config_path is None:
        beside = unet_path.with_name("musetalk.json")
        config_path = beside if beside.is_file() else "full"
    config = as_musetalk_config(config_path)
    state = read_state_dict_file(unet_path)
    expected = check_musetalk_state_dict(state, config, str(unet_path))
    tensors = {f"unet.{key}": state[key].to(dtype or state[key].dtype).contiguous() for key in expected}
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config.to_json()}
    header.update({str(key): str(value) for key, value in (metadata or {}).items()})
    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial = output_path.with_name(output_path.name + ".partial")
    try:
        save_file(tensors, str(partial), metadata=header)
        os.replace(partial, output_path)
    finally:
        partial.unlink(missing_ok=True)
    return output_path


def read_musetalk_metadata(path: PathLike) -> dict[str, str]:
    """The metadata of a converted MuseTalk file (reads the header only), checked for our format."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MuseTalkError(f"{path} does not exist.")
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = dict(handle.metadata() or {})
    except Exception as error:
        raise MuseTalkError(f"{path} is not a readable safetensors file ({_first_line(error)}).") from error
    if metadata.get("format") != FORMAT:
        raise MuseTalkError(
            f"{path} is not a converted MuseTalk file (metadata format {metadata.get('format')!r}). Convert "
            f"upstream's unet.pth with convert_musetalk, or load it directly with load_musetalk_unet."
        )
    if metadata.get("format_version") != FORMAT_VERSION:
        raise MuseTalkError(
            f"{path} has MuseTalk format version {metadata.get('format_version')!r}; this code reads "
            f"{FORMAT_VERSION!r}. Update the node pack or convert the file again."
        )
    return metadata


def load_musetalk_safetensors(
    path: PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> MuseTalkModel:
    """Load a file written by :func:`convert_musetalk` as a :class:`MuseTalkModel` (strict: every tensor of
    the config's UNet with its shape, nothing else). ``model.metadata`` holds the file's metadata."""
    from safetensors import safe_open

    path = Path(path)
    metadata = read_musetalk_metadata(path)
    config = MuseTalkConfig.from_json(metadata.get("config", ""), source=f"{path} (config in its metadata)")
    expected = meta_state_shapes(config)
    with safe_open(str(path), "pt") as handle:
        keys = set(handle.keys())
        wanted = {f"unet.{key}" for key in expected}
        if keys != wanted:
            missing, extra = sorted(wanted - keys), sorted(keys - wanted)
            raise MuseTalkError(
                f"{path}: keys do not match its config ({len(missing)} missing, e.g. {missing[:3]}; "
                f"{len(extra)} unexpected, e.g. {extra[:3]}). Convert the upstream file again."
            )
        state = {}
        for key, shape in expected.items():
            tensor = handle.get_tensor(f"unet.{key}")
            if tuple(tensor.shape) != shape:
                raise MuseTalkError(f"{path}: unet.{key} is {list(tensor.shape)}, its config says {list(shape)}.")
            state[key] = tensor
    unet = musetalk_unet_from_state_dict(state, config, device, dtype, source=str(path))
    model = MuseTalkModel(unet, config)
    model.metadata = metadata
    return model


# --------------------------------------------------------------------------------------------------
# File identity (hash on request only: a 3.4 GB file takes seconds to minutes)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownFile:
    """A released file, identified by its sha256 (the Git LFS object id on its Hugging Face page)."""

    name: str
    size: int
    source: str
    role: str  # "musetalk-unet", "sd-vae", ...


# Only full hashes read on the publisher's own Hugging Face page. MuseTalk's own files are not here yet: their
# full hashes were found only in third-party download scripts and mirrors, not on TMElyralab/MuseTalk's
# pages; add them (name, size, source) once read there.
KNOWN_FILES: dict[str, KnownFile] = {
    "735e4c3a447a3255760d7f86845f09f937809baa529c17370d83e4c3758f3c75": KnownFile(
        name="vae-ft-mse-840000-ema-pruned.safetensors",
        size=334_641_190,
        source="https://huggingface.co/stabilityai/sd-vae-ft-mse-original",
        role="sd-vae",
    ),
}


def file_sha256(path: PathLike, progress: Callable[[int, int], None] | None = None, chunk_mib: int = 16) -> str:
    """The sha256 of a file, read in chunks; ``progress(bytes_done, total)`` after each chunk."""
    path = Path(path)
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_mib << 20):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def identify_file(path: PathLike, progress: Callable[[int, int], None] | None = None) -> KnownFile | None:
    """The :class:`KnownFile` whose hash the file has, or None (unknown: not necessarily wrong). Hashes the
    whole file, so call it on request (e.g. a "verify" button), not on every load."""
    path = Path(path)
    size = path.stat().st_size
    if not any(known.size == size for known in KNOWN_FILES.values()):
        return None  # no known file of this size: skip reading gigabytes
    return KNOWN_FILES.get(file_sha256(path, progress))


# --------------------------------------------------------------------------------------------------
# Audio front end
# --------------------------------------------------------------------------------------------------


def musetalk_window_indices(
    num_frames: int,
    fps: float | Fraction | str,
    window: int = AUDIO_WINDOW,
    match_upstream: bool = False,
    first_frame: int = 0,
) -> torch.Tensor:
    """Encoder frames ``int64 [T, window]`` read by video frames ``first_frame ... first_frame + T - 1`` (indices
    into the unpadded 50 Hz states; negative or past the end means a zero frame).

    Frame ``i`` reads ``floor(i * 50 / fps) - 4 ... + window - 1``: at 25 fps encoder frames ``2i-4 ... 2i+5``.
    ``fps`` is exact (29.97 is 30000/1001). ``match_upstream`` repeats upstream's arithmetic bit for bit: the
    rate truncated to an integer (29.97 -> 29), ``floor(i * (50 / rate))`` in floating point, and a left pad of
    ``2 * ceil(50 / rate)`` frames (6 instead of 4 below 25 fps, which starts the window 2 frames earlier).
    """
    if num_frames < 0 or window < 1 or first_frame < 0:
        raise ValueError(f"need num_frames >= 0, window >= 1, first_frame >= 0, got {num_frames}, {window}, "
                         f"{first_frame}")
    frames = range(first_frame, first_frame + num_frames)
    if match_upstream:
        rate = int(float(as_fps(fps)))
        if rate < 1:
            raise ValueError(f"upstream truncates fps to an integer; {fps} gives {rate}")
        multiplier = ENCODER_RATE / rate
        pad = 2 * math.ceil(multiplier)
        starts = [math.floor(i * multiplier) - pad for i in frames]
    else:
        fps = as_fps(fps)
        starts = [math.floor(Fraction(ENCODER_RATE * i) / fps) - AUDIO_LEFT_PAD for i in frames]
    return torch.tensor(starts, dtype=torch.int64).reshape(-1, 1) + torch.arange(window)


def musetalk_audio_windows(
    hidden_states: torch.Tensor,
    fps: float | Fraction | str,
    num_frames: int,
    window: int = AUDIO_WINDOW,
    match_upstream: bool = False,
    first_frame: int = 0,
    state_offset: int = 0,
) -> torch.Tensor:
    """Per-frame windows ``[T, window, L, D]`` of Whisper hidden states ``[L, N, D]`` at 50 Hz (frame ``j``
    centred at ``j / 50`` s of the audio), cut by :func:`musetalk_window_indices`; zeros outside ``[0, N)``.

    A piece at a time (bounded memory): video frames from ``first_frame`` on, from states that start at encoder
    frame ``state_offset`` and hold every frame those video frames read inside the audio.

    As upstream, ``N`` should be the audio's length in encoder frames (``samples // 320`` at 16 kHz), so
    frames past the audio read zeros, not Whisper's features of padding.
    """
    if hidden_states.ndim != 3:
        raise ValueError(f"hidden_states must be [L, N, D], got {list(hidden_states.shape)}")
    num_layers, length, dim = hidden_states.shape
    indices = musetalk_window_indices(num_frames, fps, window, match_upstream, first_frame) - state_offset
    indices = indices.to(hidden_states.device)
    inside = (indices >= 0) & (indices < length)
    if length == 0:
        return hidden_states.new_zeros(num_frames, window, num_layers, dim)
    gathered = hidden_states[:, indices.clamp(0, length - 1)]  # [L, T, W, D]
    gathered = gathered * inside[None, :, :, None].to(gathered.dtype)
    return gathered.permute(1, 2, 0, 3).contiguous()


def sinusoidal_position_encoding(length: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """``float32 [length, dim]``: ``sin(p / base^(2k/dim))`` at even dims ``2k`` and ``cos`` of the same angle
    at odd dims ``2k+1`` (the Transformer's encoding; MuseTalk adds it with ``dim`` 384)."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    position = torch.arange(length, dtype=torch.float64)[:, None]
    frequency = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angle = position * frequency[None]
    encoding = torch.empty(length, dim, dtype=torch.float64)
    encoding[:, 0::2] = torch.sin(angle)
    encoding[:, 1::2] = torch.cos(angle)
    return encoding.float()


def musetalk_audio_tokens(windows: torch.Tensor) -> torch.Tensor:
    """Audio tokens ``[T, W*L, D]`` from windows ``[T, W, L, D]``: flattened time-major (token ``w*L + l`` is
    layer ``l`` of encoder frame ``w``) plus :func:`sinusoidal_position_encoding` ``(W*L, D)``.

    The pack's own per-frame features ``[T, L, W, D]`` (``WhisperAudioEncoder.frame_features``) fit after
    ``features.transpose(1, 2)``, but their window is centred on the frame's centre and interpolated, half an
    encoder frame off MuseTalk's integer window (:func:`musetalk_audio_windows` is the exact one).
    """
    if windows.ndim != 4:
        raise ValueError(f"windows must be [T, W, L, D], got {list(windows.shape)}")
    frames, window, layers, dim = windows.shape
    tokens = windows.reshape(frames, window * layers, dim)
    return tokens + sinusoidal_position_encoding(window * layers, dim).to(tokens.device, tokens.dtype)


def _whisper_config(encoder: Any) -> Any:
    for candidate in (getattr(getattr(encoder, "encoder", None), "config", None), getattr(encoder, "config", None)):
        if candidate is not None:
            return candidate
    return encoder


def check_musetalk_whisper(encoder: Any, source: str = "the Whisper model") -> None:
    """Refuse a Whisper that is not MuseTalk's (multilingual ``openai/whisper-tiny``).

    ``encoder``: a :class:`~lipsync_core.audio.WhisperAudioEncoder`, a transformers Whisper model or encoder,
    or its ``WhisperConfig``. The English-only ``tiny.en`` (vocabulary 51864) has the same shapes but other
    weights; any width but 384 or a layer count but 4 gives other tokens than MuseTalk was trained on.
    """
    config = _whisper_config(encoder)
    width = getattr(config, "d_model", None)
    layers = getattr(config, "encoder_layers", None)
    vocab = getattr(config, "vocab_size", None)
    hint = (
        "MuseTalk was trained on the multilingual openai/whisper-tiny (a transformers folder; LatentSync's "
        "whisper/tiny.pt converts with convert_whisper)."
    )
    if width != AUDIO_DIM or layers != AUDIO_LAYERS - 1:
        raise MuseTalkError(
            f"{source} has d_model {width} and {layers} encoder layers; MuseTalk needs Whisper tiny "
            f"(d_model {AUDIO_DIM}, {AUDIO_LAYERS - 1} layers). {hint}"
        )
    if vocab is None:
        raise MuseTalkError(f"{source}: its config has no vocab_size, so tiny and tiny.en look alike. {hint}")
    if vocab <= _ENGLISH_ONLY_VOCAB:
        raise MuseTalkError(
            f"{source} is the English-only Whisper tiny.en (vocabulary {vocab}): same shapes as whisper-tiny but "
            f"other weights, so MuseTalk would hear garbled features. {hint}"
        )


@torch.no_grad()
def whisper_log_mel_30s(waveform: torch.Tensor, mel_filters: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Whisper's log-mel ``[n_mels, 3000]`` of up to 30 s of 16 kHz audio, as transformers'
    ``WhisperFeatureExtractor`` computes it: zero-padded to 30 s, power STFT (400 / 160, centred, Hann),
    mel, ``log10`` (floor 1e-10), floored at the segment's maximum - 8, then ``(x + 4) / 4``.

    Unlike ``WhisperAudioEncoder.log_mel`` the floor is this segment's, with no minimum for its top.
    """
    padded = waveform.new_zeros(SEGMENT_SAMPLES, dtype=torch.float32)
    padded[: waveform.numel()] = waveform[:SEGMENT_SAMPLES].to(torch.float32)
    stft = torch.stft(padded.to(window.device), _N_FFT, _HOP, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    log_spec = torch.clamp(mel_filters.T.to(power) @ power, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


@torch.no_grad()
def musetalk_whisper_states(
    encoder: Any, audio: Audio, progress: Callable[[int, int], None] | None = None
) -> torch.Tensor:
    """All hidden states ``float32 [5, N, 384]`` (CPU) at 50 Hz as MuseTalk computes them: the audio cut into
    consecutive 30 s segments, each with its own log-mel (:func:`whisper_log_mel_30s`) and encoder pass,
    concatenated and cut to the audio's ``N = samples // 320`` frames.

    ``encoder``: a :class:`~lipsync_core.audio.WhisperAudioEncoder` (its encoder module, mel filters and
    window are used), checked by :func:`check_musetalk_whisper`. Audio at another rate is resampled to 16 kHz
    with the pack's resampler (upstream uses librosa's).
    """
    check_musetalk_whisper(encoder)
    waveform = audio.waveform
    if audio.sample_rate != WHISPER_SAMPLE_RATE:
        waveform = resample(waveform, audio.sample_rate, WHISPER_SAMPLE_RATE)
    if waveform.numel() < SEGMENT_SAMPLES // 1500:
        raise MuseTalkError("The audio is shorter than one Whisper encoder frame (20 ms).")
    module = encoder.encoder
    param = next(module.parameters())
    starts = range(0, waveform.numel(), SEGMENT_SAMPLES)
    pieces = []
    for index, start in enumerate(starts):
        mel = whisper_log_mel_30s(waveform[start : start + SEGMENT_SAMPLES], encoder.mel_filters, encoder.stft_window)
        out = module(mel[None].to(param.device, param.dtype), output_hidden_states=True)
        pieces.append(torch.stack(out.hidden_states, dim=0)[:, 0].float().cpu())
        if progress is not None:
            progress(index + 1, len(starts))
    return torch.cat(pieces, dim=1)[:, : waveform.numel() // (WHISPER_SAMPLE_RATE // ENCODER_RATE)]


def musetalk_audio_features(
    encoder: Any,
    audio: Audio,
    fps: float | Fraction | str,
    num_frames: int | None = None,
    match_upstream: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Per-frame windows ``[T, 10, 5, 384]`` for ``audio`` (see :func:`musetalk_whisper_states` and
    :func:`musetalk_audio_windows`); feed them to :func:`musetalk_audio_tokens`. ``num_frames`` defaults to
    upstream's ``floor(seconds * fps)`` (with ``match_upstream``, its integer fps)."""
    if num_frames is None:
        seconds = Fraction(audio.num_samples, audio.sample_rate)
        rate = int(float(as_fps(fps))) if match_upstream else as_fps(fps)
        num_frames = math.floor(seconds * rate)
    states = musetalk_whisper_states(encoder, audio, progress)
    return musetalk_audio_windows(states, fps, num_frames, match_upstream=match_upstream)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


def mask_lower_half(crops: torch.Tensor) -> torch.Tensor:
    """The crops ``[B, 3, S, S]`` (-1..1) with rows ``>= S // 2`` black (-1): MuseTalk's masked input
    (upstream zeroes them in 0..1 before normalising)."""
    masked = crops.clone()
    masked[..., crops.shape[-2] // 2 :, :] = -1.0
    return masked


def encode_crops(vae, crops: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scaled latents (``x vae.config.scaling_factor``) of crops ``[B, 3, S, S]`` in -1..1: the posterior mean,
    or with ``generator`` a seeded sample (upstream's ``latent_dist.sample()``)."""
    param = next(vae.parameters())
    dist = vae.encode(crops.to(param.device, param.dtype)).latent_dist
    latents = dist.mode() if generator is None else dist.sample(generator=generator)
    return latents * vae.config.scaling_factor


def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Crops ``float32 [B, 3, S, S]`` in -1..1 (clamped) from scaled latents."""
    param = next(vae.parameters())
    image = vae.decode(latents.to(param.device, param.dtype) / vae.config.scaling_factor).sample
    return image.float().clamp(-1.0, 1.0)


class MuseTalkModel(torch.nn.Module):
    """MuseTalk's UNet and how it is called: one forward at timestep 0 per batch of frames.

    Args:
        unet: a diffusers ``UNet2DConditionModel`` with MuseTalk's shapes (from :func:`load_musetalk_unet`).
        config: its :class:`MuseTalkConfig` (default: read from ``unet.config``).
    """

    parts = ("unet",)

    def __init__(self, unet: UNet2DConditionModel, config: MuseTalkConfig | None = None):
        super().__init__()
        self.unet = unet
        self.config = config or MuseTalkConfig(dict(unet.config), source="unet.config")
        self.metadata: dict[str, str] = {}

    @classmethod
    def from_config(cls, config: MuseTalkConfig | Mapping | PathLike | str) -> MuseTalkModel:
        """A randomly initialised model (tests)."""
        config = as_musetalk_config(config)
        return cls(config.build_unet().eval(), config)

    @classmethod
    def from_upstream(
        cls,
        unet_path: PathLike,
        config_path_or_dict: MuseTalkConfig | Mapping | PathLike | str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> MuseTalkModel:
        """:func:`load_musetalk_unet` wrapped as a model."""
        unet = load_musetalk_unet(unet_path, config_path_or_dict, device, dtype)
        return cls(unet, MuseTalkConfig(dict(unet.config), source=str(unet_path)))

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @torch.no_grad()
    def lipsync_latents(
        self, masked_latents: torch.Tensor, reference_latents: torch.Tensor, audio_tokens: torch.Tensor
    ) -> torch.Tensor:
        """Predicted latents ``[B, 4, h, w]`` (scaled) for a batch of frames.

        Args:
            masked_latents: ``[B, 4, h, w]`` scaled latents of the crops with their lower half black.
            reference_latents: ``[B, 4, h, w]`` scaled latents of the reference crops.
            audio_tokens: ``[B, 50, 384]`` from :func:`musetalk_audio_tokens`.
        """
        if not masked_latents.shape == reference_latents.shape or masked_latents.shape[0] != audio_tokens.shape[0]:
            raise ValueError(
                f"masked {list(masked_latents.shape)}, reference {list(reference_latents.shape)} and audio tokens "
                f"{list(audio_tokens.shape)} must share the batch (and the latents their shape)."
            )
        sample = torch.cat([masked_latents, reference_latents], dim=1).to(self.device, self.dtype)
        timestep = torch.zeros(sample.shape[0], dtype=torch.int64, device=self.device)
        context = audio_tokens.to(self.device, self.dtype)
        return self.unet(sample, timestep, encoder_hidden_states=context).sample

    @torch.no_grad()
    def lipsync_crops(
        self,
        crops: torch.Tensor,
        audio_tokens: torch.Tensor,
        vae,
        references: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """New crops ``float32 [B, 3, S, S]`` in -1..1 from crops in -1..1, the whole per-batch computation:
        lower half black -> VAE encode (scaled), masked and reference -> UNet -> decode.

        ``references`` (``[B, 3, S, S]``) default to the crops themselves, as upstream's inference does.
        With ``generator`` both encodings are seeded samples, masked first (upstream's order).
        """
        references = crops if references is None else references
        masked = encode_crops(vae, mask_lower_half(crops), generator)
        reference = encode_crops(vae, references, generator)
        return decode_latents(vae, self.lipsync_latents(masked, reference, audio_tokens))
