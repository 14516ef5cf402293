"""``python -m lipsync_core gpu-check``: the one-shot check of the pack on a GPU, with random weights, no downloads.

1. parity: our UNet against diffusers' stock ``UNetSpatioTemporalConditionModel`` with shared weights, fp32 and
   bf16 (CUDA), and whether SDPA's flash / memory-efficient kernels take every attention call;
2. presets: every speed preset end to end on a synthetic clip (latents spilled to disk in one run), seconds per
   output second split into canvas encode, sampling and decode, and the UNet's achieved TFLOP/s;
3. length: peak device memory and host RSS for two clip lengths (they must not grow with it);
4. cards: the quality preset on emulated 8 / 12 / 16 / 24 GB cards (``set_per_process_memory_fraction``), pass
   or out-of-memory beside the memory plan's prediction.
``--device cpu --size tiny`` is the CI mode (runs in the default test suite so it cannot rot).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = ("Check the pack on a GPU with random full-size weights (no downloads): UNet parity with diffusers, every "
        "speed preset end to end, memory against clip length, emulated small cards; writes JSON.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, required=True, metavar="OUT", help="write the report here")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", choices=("tiny", "full"), default="full")
    parser.add_argument("--seconds", type=float, nargs=2, default=(2.0, 6.0), metavar=("SHORT", "LONG"),
                        help="the two clip lengths (25 fps)")
    parser.add_argument("--cards", type=float, nargs="*", default=(8, 12, 16, 24), metavar="GIB",
                        help="emulated card sizes (CUDA only)")


def main(args: argparse.Namespace) -> int:
    import gc
    import platform

    import torch

    report = {"device": str(args.device), "size": args.size, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine()}
    if torch.device(args.device).type == "cuda":
        report["device"] = torch.cuda.get_device_name(args.device)
        report["capability"] = list(torch.cuda.get_device_capability(args.device))
    steps = [("parity", _parity), ("presets", _presets), ("length", _length), ("cards", _cards)]
    for name, step in steps:
        try:
            report[name] = step(args)
        except Exception as error:  # one failing part must not hide the others' figures
            report[name] = {"error": f"{type(error).__name__}: {error}"}
        gc.collect()  # each part builds its own model: free the last one's memory first
        if torch.device(args.device).type == "cuda":
            torch.cuda.empty_cache()
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")  # what ran so far survives
        print(f"[gpu-check] {name}: {json.dumps(report[name], default=str)[:400]}", flush=True)
    return 0


def _build(size: str, device, dtype):
    """A random model of ``size`` with a random VAE of its size, on ``device`` in ``dtype``: a LoadedModel."""
    import torch

    from ..checkpoint import LoadedModel
    from ..configs import ModelDefaults, SayAnythingConfig, build_vae
    from ..models import SayAnythingModel

    torch.manual_seed(0)
    with torch.device(device):
        model = SayAnythingModel(SayAnythingConfig.preset(size)).to(dtype).eval()
        vae = build_vae(size).to(dtype).eval()
    model.defaults = ModelDefaults.for_preset(size)
    return LoadedModel(model=model, vae=vae, path=f"random {size}")


def _parity(args) -> dict:
    """Max relative error of our UNet against the stock one (same weights, same tokens on every frame)."""
    import torch
    from diffusers import UNetSpatioTemporalConditionModel

    from ..configs import SayAnythingConfig
    from ..models import SayAnythingModel

    device = torch.device(args.device)
    config = SayAnythingConfig.preset(args.size)
    torch.manual_seed(0)
    with torch.device(device):
        ours = SayAnythingModel(config).unet.eval()
        stock = UNetSpatioTemporalConditionModel(**dict(config.unet.diffusers_kwargs(), in_channels=8)).eval()
    state = ours.state_dict()
    state["conv_in.weight"] = state["conv_in.weight"][:, :8]
    stock.load_state_dict(state)
    latent, frames = (64, 14) if args.size == "full" else (8, 4)
    generator = torch.Generator(device).manual_seed(1)
    sample = torch.randn(1, frames, 9, latent, latent, device=device, generator=generator)
    sample[:, :, 8:] = 0  # the mask channel, zero-initialised in ours
    tokens = torch.randn(1, 4, config.unet.cross_attention_dim, device=device, generator=generator)
    time_ids = torch.tensor([[24.0, 127.0, 0.02]], device=device)
    results = {}
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
    for dtype in dtypes:
        ours.to(dtype), stock.to(dtype)
        with torch.no_grad():
            expected = stock(sample[:, :, :8].to(dtype), 1.0, tokens.to(dtype), time_ids, return_dict=False)[0]
            actual = ours(sample.to(dtype), 1.0, tokens[:, None].expand(1, frames, -1, -1).to(dtype), time_ids)
        error = ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()
        results[str(dtype).removeprefix("torch.")] = {"max_relative_error": error,
                                                       "limit": 1e-4 if dtype == torch.float32 else 2e-2}
    if device.type == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        try:  # every attention call must run without the math fallback
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]), torch.no_grad():
                ours.to(torch.bfloat16)(sample.to(torch.bfloat16), 1.0,
                                        tokens[:, None].expand(1, frames, -1, -1).to(torch.bfloat16), time_ids)
            results["fused_attention"] = True
        except RuntimeError as error:
            results["fused_attention"] = f"no: {str(error).splitlines()[0]}"
    return results


def _clip(loaded, seconds: float, fps: float = 25.0):
    """A synthetic clip of crops in -1..1, its lower-half mask and random audio features."""
    import torch

    size = loaded.defaults.crop_size
    count = max(1, round(seconds * fps))
    generator = torch.Generator().manual_seed(2)
    frames = torch.rand(count, 3, size, size, generator=generator) * 2 - 1
    mask = torch.zeros(count, 1, size, size)
    mask[:, :, size // 2:] = 1
    audio = torch.randn(count, 5, loaded.defaults.feature_window, 384, generator=generator)
    return frames, mask, audio


def _run(loaded, plan, seconds: float, device, spill: bool = False) -> dict:
    """One run of the pipeline's steps on a synthetic clip; seconds per phase, peak memory."""
    import resource
    import time

    import torch

    from ..streaming import frame_buffer

    frames, mask, audio = _clip(loaded, seconds)
    pipeline = loaded.pipeline()
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    buffer = (lambda shape, dtype: frame_buffer(shape, dtype, spill_bytes=1)) if spill else torch.zeros
    times = {}
    generator = torch.Generator().manual_seed(plan.seed)
    started = time.perf_counter()
    video = pipeline.prepare_latents(frames.shape[0], tuple(frames.shape[-2:]), plan, generator, buffer=buffer)
    for start in range(0, frames.shape[0], plan.decode_chunk):
        end = start + plan.decode_chunk
        pipeline.encode_canvas(video, start, frames[start:end], mask[start:end], plan, generator, device)
    ids = loaded.model.encode_reference(frames[:1].to(device, loaded.model.dtype))
    sync()
    times["canvas"] = time.perf_counter() - started
    items = {"full": 0, "reused": 0}  # UNet forwards, one per guidance branch of one window

    def count(module, args, kwargs):
        cache = kwargs.get("deep_cache")
        items["reused" if cache is not None and cache.reuse else "full"] += args[0].shape[0]

    hook = loaded.model.unet.register_forward_pre_hook(count, with_kwargs=True)
    started = time.perf_counter()
    try:
        pipeline.denoise(video, audio, ids, plan, device=device)
        sync()
    finally:
        hook.remove()
    times["sampling"] = time.perf_counter() - started
    started = time.perf_counter()
    decoded = sum(chunk.shape[0] for _, chunk in pipeline.decode(video, plan, device))
    sync()
    times["decode"] = time.perf_counter() - started
    output_seconds = frames.shape[0] / plan.fps
    result = {"frames": decoded, "seconds_per_output_second": {k: v / output_seconds for k, v in times.items()},
              "unet_forwards": items, "sampling_seconds": times["sampling"],
              "host_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    result["seconds_per_output_second"]["total"] = sum(times.values()) / output_seconds
    if cuda:
        result["device_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def _plan(loaded, speed: str):
    from ..plan import SamplerOptions

    return SamplerOptions(speed=speed).resolve(loaded.defaults)


def _unet_tflop(loaded, plan, device) -> float:
    """TFLOP of one guided UNet call of ``plan`` (torch's FLOP counter, on the device)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..models import Conditioning, make_added_time_ids

    model, branches, frames = loaded.model, 3, plan.window
    latent = loaded.defaults.crop_size // loaded.pipeline().vae_scale_factor
    dtype = model.dtype
    cond = Conditioning(
        masked_latents=torch.zeros(branches, frames, 4, latent, latent, device=device, dtype=dtype),
        mask=torch.zeros(branches, frames, 1, latent, latent, device=device, dtype=dtype),
        audio_features=torch.zeros(branches, frames, 5, loaded.defaults.feature_window, 384, device=device),
        id_features=[f.expand(branches, *f.shape[1:]) for f in model.encode_reference(
            torch.zeros(1, 3, loaded.defaults.crop_size, loaded.defaults.crop_size, device=device, dtype=dtype))],
        added_time_ids=make_added_time_ids(25, 127, 0.02, branches, device))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.denoise(torch.zeros(branches, frames, 4, latent, latent, device=device), 1.0, cond)
    return counter.get_total_flops() / 1e12


def _presets(args) -> dict:
    import torch

    from ..checkpoint import resolve_dtype
    from ..speed import SPEEDS

    device = torch.device(args.device)
    loaded = _build(args.size, device, resolve_dtype("auto", device))
    results = {}
    seconds = args.seconds[0]
    for speed in SPEEDS:
        plan = _plan(loaded, speed)
        run = _run(loaded, plan, seconds, device)
        per_forward = _unet_tflop(loaded, plan, device) / 3  # one branch of one window
        achieved = None
        if not run["unet_forwards"]["reused"]:  # exact where no forward reuses deep features
            achieved = run["unet_forwards"]["full"] * per_forward / run["sampling_seconds"]
        results[speed] = dict(run, unet_tflop_per_forward=per_forward, achieved_unet_tflop_per_second=achieved,
                              steps=plan.steps)
    results["fast_spilled"] = _run(loaded, _plan(loaded, "fast"), seconds, device, spill=True)
    return results


def _length(args) -> dict:
    import torch

    from ..checkpoint import resolve_dtype

    device = torch.device(args.device)
    loaded = _build(args.size, device, resolve_dtype("auto", device))
    return {speed: {f"{seconds:g} s": _run(loaded, _plan(loaded, speed), seconds, device, spill=True)
                    for seconds in args.seconds} for speed in ("quality", "fast")}


def _cards(args) -> dict:
    """Each emulated card: the memory plan's prediction and what a run of the quality preset did."""
    import torch

    from ..checkpoint import resolve_dtype
    from ..memory import GIB, RunShape, fit

    device = torch.device(args.device)
    loaded = _build(args.size, device, resolve_dtype("auto", device))
    shape = RunShape.of(loaded, loaded.defaults.crop_size)
    results = {}
    for card in args.cards:
        plan, prediction = fit(shape, _plan(loaded, "quality"), int(card * GIB))
        entry = {"predicted": prediction.to_json()}
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, card * GIB / total), device)
            try:
                entry["measured"] = _run(loaded, plan, 1.0, device)
                entry["ran"] = True
            except torch.OutOfMemoryError:
                entry["ran"] = False
            finally:
                torch.cuda.set_per_process_memory_fraction(1.0, device)
                torch.cuda.empty_cache()
        results[f"{card:g} GB"] = entry
    return results
