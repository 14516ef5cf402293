"""Benchmark one denoising step: SayAnything (all guidance branches batched) vs stock diffusers SVD UNet.

Each variant runs in its own child process, so CPU peak memory (max RSS) is its own and CUDA peaks do
not mix. A step of ours is ``SayAnythingModel.denoise`` on a batch of 3 (uncond / +reference /
+reference+audio) including the audio projection; the ID features are computed once per video and so
are outside the step. The stock step is diffusers' ``UNetSpatioTemporalConditionModel`` (8 input
channels, one context token) on the same batch, latent size and frame count.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .checkpoint import parse_dtype

GUIDANCE_BRANCHES = 3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _max_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(
    variant: str,
    size: str,
    device: str,
    frames: int,
    resolution: int,
    dtype: str,
    repeats: int,
    warmup: int,
    threads: int | None = None,
) -> dict[str, Any]:
    """Time ``repeats`` steps of one variant (``"sayanything"`` or ``"stock"``) in this process."""
    from .configs import SayAnythingConfig
    from .models import Conditioning, SayAnythingModel, make_added_time_ids

    if threads:
        torch.set_num_threads(threads)

    torch.manual_seed(0)
    config = SayAnythingConfig.preset(size)
    dev = torch.device(device)
    torch_dtype = parse_dtype(dtype)
    factor = config.id_guider.latent_scale_factor
    if resolution % (factor * 2 ** (len(config.unet.block_out_channels) - 1)):
        raise ValueError(
            f"resolution {resolution} must be a multiple of "
            f"{factor * 2 ** (len(config.unet.block_out_channels) - 1)} for size {size}"
        )
    latent = resolution // factor
    batch = GUIDANCE_BRANCHES
    rss_before = _max_rss_bytes()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    if variant == "sayanything":
        model = SayAnythingModel(config).to(dev, torch_dtype).eval()
        parameters = sum(p.numel() for p in model.parameters())
        audio = config.audio
        with torch.no_grad():
            id_features = model.encode_reference(torch.zeros(1, 3, resolution, resolution, device=dev))
        cond = Conditioning(
            masked_latents=torch.randn(batch, frames, 4, latent, latent, device=dev),
            mask=torch.ones(batch, frames, 1, latent, latent, device=dev),
            audio_features=torch.randn(batch, frames, audio.num_layers, audio.window, audio.feature_dim, device=dev),
            id_features=[torch.cat([torch.zeros_like(f), f, f]) for f in id_features],
            added_time_ids=make_added_time_ids(25, 127, 0.02, batch, dev),
        )
        noisy = torch.randn(batch, frames, 4, latent, latent, device=dev)

        def step():
            return model.denoise(noisy, 5.0, cond)

    elif variant == "stock":
        from diffusers import UNetSpatioTemporalConditionModel

        kwargs = dict(config.unet.diffusers_kwargs(), in_channels=8)
        model = UNetSpatioTemporalConditionModel(**kwargs).to(dev, torch_dtype).eval()
        parameters = sum(p.numel() for p in model.parameters())
        sample = torch.randn(batch, frames, 8, latent, latent, device=dev, dtype=torch_dtype)
        context = torch.randn(batch, 1, config.unet.cross_attention_dim, device=dev, dtype=torch_dtype)
        timestep = torch.full((batch,), 0.4, device=dev, dtype=torch_dtype)
        added = make_added_time_ids(25, 127, 0.02, batch, dev, torch_dtype)

        def step():
            return model(sample, timestep, context, added, return_dict=False)[0]

    else:
        raise ValueError(f"unknown variant {variant!r}")

    times = []
    with torch.no_grad():
        for index in range(warmup + repeats):
            _sync(dev)
            start = time.perf_counter()
            step()
            _sync(dev)
            if index >= warmup:
                times.append(time.perf_counter() - start)
        flops = _count_flops(step)
    result = {
        "variant": variant,
        "parameters": parameters,
        "step_seconds_median": statistics.median(times),
        "step_seconds_all": times,
        "flops_per_step": flops,
        "torch_threads": torch.get_num_threads(),
    }
    if dev.type == "cuda":
        result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(dev)
    result["peak_rss_bytes"] = _max_rss_bytes()
    result["rss_before_model_bytes"] = rss_before
    return result


def _count_flops(step) -> int | None:
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def _machine(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def run_benchmark(
    size: str = "tiny",
    device: str = "cpu",
    frames: int = 8,
    resolution: int = 128,
    dtype: str | None = None,
    repeats: int = 3,
    warmup: int = 1,
    rounds: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Measure both variants, each in fresh child processes; returns the report (also written by the CLI).

    With ``rounds`` > 1 the variants alternate (ours, stock, ours, ...) and each one's best round is
    kept: on a shared machine the fastest round is the one least disturbed by other work.
    """
    dtype = dtype or ("bf16" if device.startswith("cuda") else "fp32")
    parse_dtype(dtype)  # validate early
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device")
    args = dict(size=size, device=device, frames=frames, resolution=resolution, dtype=dtype, repeats=repeats,
                warmup=warmup, threads=threads)
    runs: dict[str, list[dict[str, Any]]] = {"sayanything": [], "stock": []}
    for _ in range(max(1, rounds)):
        for variant in runs:
            runs[variant].append(_run_child(variant, args))
    ours, stock = (min(runs[v], key=lambda r: r["step_seconds_median"]) for v in ("sayanything", "stock"))
    for variant, best in (("sayanything", ours), ("stock", stock)):
        best["round_medians"] = [r["step_seconds_median"] for r in runs[variant]]
    report: dict[str, Any] = {
        "machine": _machine(device),
        "torch": torch.__version__,
        "settings": dict(args, rounds=rounds, guidance_branches=GUIDANCE_BRANCHES),
        "load_average_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "sayanything": ours,
        "stock_diffusers": stock,
        "step_time_ratio": ours["step_seconds_median"] / stock["step_seconds_median"],
    }
    key = "peak_cuda_bytes" if "peak_cuda_bytes" in ours else "peak_rss_bytes"
    report["peak_memory_ratio"] = ours[key] / stock[key]
    if ours.get("flops_per_step"):
        report["sayanything_tflops_per_second"] = ours["flops_per_step"] / ours["step_seconds_median"] / 1e12
    return report


def _run_child(variant: str, args: dict[str, Any]) -> dict[str, Any]:
    package_parent = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
    code = (
        f"import json, sys; from {__package__}.bench import measure; "
        f"print('BENCH ' + json.dumps(measure({variant!r}, **json.loads(sys.argv[1]))))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, env=env
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("BENCH ")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark of {variant} failed:\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1][len("BENCH ") :])
