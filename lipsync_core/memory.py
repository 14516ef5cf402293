"""Device memory of a run, phase by phase, and the settings that fit a card: the memory plan.

A phase's peak is the weights resident on the device (the model and its VAE, loaded together) plus the
activations of the phase's largest call, which grow linearly with what drives them:

- ``unet``: frame-forwards per UNet call (guidance branches x windows per batch x window frames) x latent pixels,
  less with the feed-forwards in chunks (``SamplingPlan.ff_chunks``);
- ``decode``: latent frames per VAE decode call (chunk + context on both sides) x latent pixels;
- ``encode``: frames per VAE encode call x latent pixels.

``COSTS`` holds those activation bytes per unit for each model size preset, measured with fake tensors (no memory,
no compute: ``measure_costs``) in bf16 (``python -m benchmarks.memory``; BENCHMARKS.md, "Memory plan"); a model of
another shape takes the full size's, scaled by the square of its UNet's first width (a rough guide). The plan is
then arithmetic: ``fit`` keeps what the user set, and for the rest takes the fastest settings whose predicted peak,
with CUDA's context and the allocator's fragmentation on top, fits the card.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .plan import SamplerOptions, SamplingPlan

logger = logging.getLogger(__name__)

GIB = 2**30
CUDA_CONTEXT = 0.5 * GIB  # what the CUDA context and kernels take before any tensor (typical, torch 2.x)
FRAGMENTATION = 0.10  # the caching allocator's slack over the live bytes at a peak
FF_CHUNK_CHOICES = (1, 4, 8)
DECODE_CHUNK_CHOICES = (8, 4, 2, 1)
REFERENCE_WIDTH = 320  # the full-size UNet's first block width, at which COSTS were measured


@dataclass(frozen=True)
class ActivationCosts:
    """Activation bytes per unit of what drives each phase (bf16/fp16 weights; fp32 doubles them)."""

    unet_per_frame_pixel: dict[int, float]  # by ff_chunks: bytes per (frame-forward x latent pixel)
    decode_per_frame_pixel: float  # bytes per (decoded latent frame x latent pixel)
    encode_per_frame_pixel: float  # bytes per (encoded frame x latent pixel)


COSTS = {
    # 512 px (64 x 64 latents), 14-frame windows, bf16 (benchmarks/memory.json)
    "full": ActivationCosts(unet_per_frame_pixel={1: 19330.4, 4: 11650.4, 8: 10371.7},
                            decode_per_frame_pixel=131080.0, encode_per_frame_pixel=82304.0),
    # MuseTalk 1.5: its UNet2D on 32 x 32 latents (256 px), its SD VAE (2-D: no context frames), fp16
    "musetalk": ActivationCosts(unet_per_frame_pixel={1: 16681.0}, decode_per_frame_pixel=98318.0,
                                encode_per_frame_pixel=82304.0),
    # 64 px (16 x 16 latents), 8-frame windows, bf16 (tests/core/test_memory.py measures it again)
    "tiny": ActivationCosts(unet_per_frame_pixel={1: 2195.8, 4: 1427.8, 8: 1300.8}, decode_per_frame_pixel=7176.0,
                            encode_per_frame_pixel=5216.0),
}


@dataclass(frozen=True)
class RunShape:
    """What a run's memory depends on besides its settings: weight bytes on the device, the latent size, the
    guidance branches of one call (3; 4 with motion guidance), the bytes of one activation value and the UNet's
    first width."""

    weight_bytes: int
    latent_size: int
    branches: int = 3
    value_bytes: int = 2
    size: str | None = "full"  # whose measured COSTS apply (None: the full size's, scaled by unet_width)
    unet_width: int = REFERENCE_WIDTH
    decode_context: int | None = None  # the VAE's context frames per decode call (None: the plan's)

    @classmethod
    def of(cls, loaded, crop_size: int, branches: int = 3) -> RunShape:
        """The shape of a run of ``loaded`` (a ``family.LoadedModel``; its ``memory_size`` names the costs) at
        ``crop_size`` pixels."""
        modules = [loaded.model, loaded.vae]
        weights = sum(p.numel() * p.element_size() for module in modules for p in module.parameters())
        factor = 2 ** (len(loaded.vae.config.block_out_channels) - 1)
        value = next(loaded.model.parameters()).element_size()
        size, width, context = loaded.memory_size()
        return cls(weights, crop_size // factor, branches, value, size if size in COSTS else None, width, context)


@dataclass(frozen=True)
class MemoryPlan:
    """The predicted peak of each phase (bytes), the settings they were predicted for, and whether the whole run
    fits ``device_bytes`` (with ``CUDA_CONTEXT`` and ``FRAGMENTATION``)."""

    phases: dict[str, int]
    settings: dict[str, int]
    device_bytes: int

    @property
    def peak(self) -> int:
        return max(self.phases.values())

    @property
    def needs(self) -> int:
        """Device memory the run needs: the peak with the allocator's slack, plus the CUDA context."""
        return int(self.peak * (1 + FRAGMENTATION) + CUDA_CONTEXT)

    @property
    def fits(self) -> bool:
        return self.needs <= self.device_bytes

    def to_json(self) -> dict:
        return {"fits": self.fits, "peak_gib": round(self.peak / GIB, 3), "needs_gib": round(self.needs / GIB, 3),
                "device_gib": round(self.device_bytes / GIB, 3),
                "phases": {name: round(value / GIB, 3) for name, value in self.phases.items()},
                "settings": dict(self.settings)}


def predict(shape: RunShape, plan: SamplingPlan, device_bytes: int,
            costs: ActivationCosts | None = None) -> MemoryPlan:
    """The memory plan of ``plan``'s settings for a run of ``shape`` on a device of ``device_bytes``."""
    costs = costs or COSTS[shape.size or "full"]
    scale = shape.value_bytes / 2 * (1 if shape.size else (shape.unet_width / REFERENCE_WIDTH) ** 2)
    pixels = shape.latent_size**2
    unet_cost = costs.unet_per_frame_pixel[max(c for c in costs.unet_per_frame_pixel if c <= plan.ff_chunks)]
    forwards = shape.branches * plan.window_batch * plan.window
    context = plan.decode_context if shape.decode_context is None else shape.decode_context
    decoded = plan.decode_chunk + 2 * context
    phases = {
        "weights": shape.weight_bytes,
        "encode": shape.weight_bytes + int(costs.encode_per_frame_pixel * scale * plan.decode_chunk * pixels),
        "unet": shape.weight_bytes + int(unet_cost * scale * forwards * pixels),
        "decode": shape.weight_bytes + int(costs.decode_per_frame_pixel * scale * decoded * pixels),
    }
    settings = {"decode_chunk": plan.decode_chunk, "decode_context": context, "ff_chunks": plan.ff_chunks,
                "window_batch": plan.window_batch, "window": plan.window, "branches": shape.branches,
                "latent_size": shape.latent_size}
    return MemoryPlan(phases, settings, device_bytes)


def fit(shape: RunShape, plan: SamplingPlan, device_bytes: int, fixed: frozenset[str] = frozenset(),
        costs: ActivationCosts | None = None) -> tuple[SamplingPlan, MemoryPlan]:
    """The fastest version of ``plan`` that fits the device: ``ff_chunks``, ``window_batch`` and ``decode_chunk``
    lowered as far as needed, except those named in ``fixed`` (the user's). Returns the plan and its prediction;
    when nothing fits, the smallest plan (its ``fits`` says so: ``shortfall_message`` explains)."""
    ff_choices = (plan.ff_chunks,) if "ff_chunks" in fixed else FF_CHUNK_CHOICES
    batch_choices = (plan.window_batch,) if "window_batch" in fixed else range(plan.window_batch, 0, -1)
    decode_choices = (plan.decode_chunk,) if "decode_chunk" in fixed else [
        c for c in DECODE_CHUNK_CHOICES if c <= plan.decode_chunk] or [plan.decode_chunk]
    # Fastest first: keep the window batch, then chunk the feed-forwards, then decode fewer frames at once.
    candidates = [plan.replace(window_batch=batch, ff_chunks=ff, decode_chunk=chunk)
                  for batch in batch_choices for chunk in decode_choices for ff in ff_choices]
    last = None
    for candidate in candidates:
        prediction = predict(shape, candidate, device_bytes, costs)
        if prediction.fits:
            return candidate, prediction
        last = (candidate, prediction)
    return last


def shortfall_message(prediction: MemoryPlan, device_name: str = "the GPU") -> str:
    """What to do when even the smallest plan does not fit."""
    phase = max((name for name in prediction.phases if name != "weights"), key=lambda name: prediction.phases[name])
    return (
        f"{device_name} has {prediction.device_bytes / GIB:.1f} GiB free, but the smallest plan for this run needs "
        f"{prediction.needs / GIB:.1f} GiB (peak in {phase}: {prediction.phases[phase] / GIB:.1f} GiB, of which "
        f"weights {prediction.phases['weights'] / GIB:.1f} GiB). Lower the crop size, use fp16/bf16 precision, set "
        "window_batch 1 and decode_chunk 1, or free memory used by other models."
    )


def activation_bytes(loaded, options: SamplerOptions, crop_size: int | None = None, motion: bool = False) -> int:
    """Device memory a run needs beyond the weights (its largest phase's activations, with the allocator's slack),
    at ``options``' settings on auto as resolved for ``loaded``: what ComfyUI's model management must keep free
    (``load_models_gpu(memory_required=)``)."""
    plan = options.resolve(loaded.defaults)
    shape = RunShape.of(loaded, crop_size or loaded.defaults.crop_size, loaded.guidance_branches(plan, motion))
    prediction = predict(shape, plan, 0)
    return int((prediction.peak - shape.weight_bytes) * (1 + FRAGMENTATION))


def fit_to_device(plan: SamplingPlan, options: SamplerOptions, loaded, crop_size: int, device, motion: bool = False,
                  free_bytes: int | None = None) -> SamplingPlan:
    """``plan`` fitted to the free memory of a CUDA ``device`` (``fit``; other devices: unchanged). A setting the
    user gave is kept, with a warning where the plan says it will not fit; a run that fits no plan is refused before
    any work, with ``shortfall_message``."""
    device = torch.device(device)
    if device.type != "cuda":
        return plan
    shape = RunShape.of(loaded, crop_size, loaded.guidance_branches(plan, motion))
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    resident = next(loaded.model.parameters()).device.type == "cuda"
    available = free_bytes + (shape.weight_bytes if resident else 0)  # the prediction counts the weights
    given = options.memory_settings_given()
    fitted, prediction = fit(shape, plan, available, given)
    if prediction.fits:
        return fitted
    smallest, best = fit(shape, plan, available)
    if not best.fits:
        raise ValueError(shortfall_message(best, torch.cuda.get_device_name(device)))
    logger.warning("%s will not fit the GPU's %.1f GiB free (the memory plan predicts %.1f GiB); %s would",
                   ", ".join(f"{name}={getattr(plan, name)}" for name in sorted(given)), available / GIB,
                   prediction.needs / GIB, ", ".join(f"{name}={getattr(smallest, name)}" for name in sorted(given)))
    return fitted


# ----------------------------------------------------------------------------------------------------------------
# Measuring (tests and benchmarks/memory.py)


def measure_peak(call) -> int:
    """Peak bytes of live tensors while ``call()`` runs, for fake tensors (``FakeTensorMode``): no memory is used
    and nothing is computed. Weights and inputs that ``call`` touches count as they are seen."""
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    with tracker, torch.no_grad():
        call()
    return int(sum(device.get("Total", 0) for device in tracker.get_tracker_snapshot("peak").values()))


def measure_costs(size: str = "full", latent_size: int = 64, frames: int = 14, dtype=None,
                  ff_chunks=FF_CHUNK_CHOICES) -> dict:
    """Measure ``ActivationCosts`` of a model size with fake tensors (a minute at full size on a CPU): the
    UNet's activations of one call of 1 and of 3 branches (their difference per frame-pixel, so weights and the
    inputs drop out) for each ``FF_CHUNK_CHOICES``, and the VAE's decode and encode per frame-pixel likewise."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .configs import SayAnythingConfig, build_vae
    from .models import Conditioning, SayAnythingModel, make_added_time_ids

    dtype = dtype or torch.bfloat16
    pixels = latent_size**2
    with FakeTensorMode():
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = SayAnythingModel(SayAnythingConfig.preset(size)).eval()
            vae = build_vae(size).eval()
        finally:
            torch.set_default_dtype(default)
        widths = model.config.unet.block_out_channels

        def unet_call(branches: int, chunks: int):
            model.unet.ff_chunks = chunks
            cond = Conditioning(
                masked_latents=torch.zeros(branches, frames, 4, latent_size, latent_size, dtype=dtype),
                mask=torch.zeros(branches, frames, 1, latent_size, latent_size, dtype=dtype),
                audio_features=torch.zeros(branches, frames, model.config.audio.num_layers, model.config.audio.window,
                                           model.config.audio.feature_dim),
                id_features=[torch.zeros(branches, width, latent_size >> i, latent_size >> i, dtype=dtype)
                             for i, width in enumerate(widths)],
                added_time_ids=make_added_time_ids(25, 127, 0.02, branches))
            noisy = torch.zeros(branches, frames, 4, latent_size, latent_size)
            return measure_peak(lambda: model.denoise(noisy, 1.0, cond))

        unet = {chunks: (unet_call(3, chunks) - unet_call(1, chunks)) / (2 * frames * pixels)
                for chunks in ff_chunks}
        model.unet.ff_chunks = 1
        decode = {count: measure_peak(lambda count=count: vae.decode(
            torch.zeros(count, 4, latent_size, latent_size, dtype=dtype), num_frames=count)) for count in (4, 12)}
        side = latent_size * 2 ** (len(vae.config.block_out_channels) - 1)
        encode = {count: measure_peak(lambda count=count: vae.encode(
            torch.zeros(count, 3, side, side, dtype=dtype)).latent_dist.mode()) for count in (2, 8)}
    return {
        "unet_per_frame_pixel": unet,
        "decode_per_frame_pixel": (decode[12] - decode[4]) / (8 * pixels),
        "encode_per_frame_pixel": (encode[8] - encode[2]) / (6 * pixels),
        "measured": {"size": size, "latent_size": latent_size, "frames": frames, "dtype": str(dtype),
                     "decode_peaks": decode, "encode_peaks": encode},
    }


def costs_from(measured: dict) -> ActivationCosts:
    return ActivationCosts({int(k): float(v) for k, v in measured["unet_per_frame_pixel"].items()},
                           float(measured["decode_per_frame_pixel"]), float(measured["encode_per_frame_pixel"]))
