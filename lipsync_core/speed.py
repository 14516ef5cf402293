"""Fast sampling: the ``speed`` presets and the few-step schedule.

``SPEED_PRESETS`` are the ``speed`` widget's choices, which fill the ``SamplerOptions`` fields left on auto
(``plan.SamplerOptions.resolve``; the fields are documented on ``plan.SamplingPlan``). Light on purpose: the
command line and the nodes read these without importing diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SCHEDULES = ("karras", "few_step")
# Latent frames decoded on each side of a VAE chunk and dropped (ours): the temporal decoder's first and
# last frames of a chunk come out in other colours than its inner ones, a flicker at every chunk edge.
DECODE_CONTEXT = 2

FEW_STEP_SIGMA_MIN = 0.05  # the last step goes to 0 from here (toy: 4 such steps keep lip sync; BENCHMARKS.md)


def few_step_sigmas(
    num_inference_steps: int, sigma_max: float, sigma_min: float = FEW_STEP_SIGMA_MIN, rho: float = 7.0
) -> torch.Tensor:
    """Karras sigmas for few steps (ours): ``num_inference_steps`` values from ``sigma_max`` to ``sigma_min``, then 0.

    SVD's schedule ends at sigma 0.002, where a step barely changes the latents; with few steps that
    last call is better spent higher up, so the final step goes to 0 from ``sigma_min``.
    """
    ramp = torch.linspace(0, 1, num_inference_steps, dtype=torch.float64)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (high + ramp * (low - high)) ** rho if num_inference_steps > 1 else torch.tensor([sigma_max])
    return torch.cat([sigmas.to(torch.float32), torch.zeros(1)])


@dataclass(frozen=True)
class SpeedPreset:
    """What one ``speed`` choice sets (each ``SamplerOptions`` field left on auto takes it).

    ``max_steps``: at most this many steps (None: the model's own); ``guidance_interval``: None = at
    every step. Measured on the toy model: BENCHMARKS.md, "Fast sampling".
    """

    max_steps: int | None
    guidance_interval: tuple[float, float] | None
    deep_cache: int
    schedule: str
    window_batch: int
    gpu_layout: bool  # channels_last + bf16 decode on CUDA
    decode_context: int = DECODE_CONTEXT


# Measured on the toy model (BENCHMARKS.md, "Fast sampling"): its mouth opening is decided in the first
# step (sigma 700), so few steps keep it; audio guidance is what keeps silent mouths shut at high and low
# sigmas alike, so the faster presets cut steps first, skip guidance only on the few-step schedule's last
# step (sigma 0.05) and reuse deep features on every other step.
GUIDED_ABOVE_LAST_STEP = (0.1, 1e4)  # every sigma but the few-step schedules' last (0.05)
SPEED_PRESETS = {
    # The sampler without fast-sampling shortcuts, bit for bit.
    "quality": SpeedPreset(max_steps=None, guidance_interval=None, deep_cache=1, schedule="karras", window_batch=1,
                           gpu_layout=False),
    "balanced": SpeedPreset(max_steps=4, guidance_interval=GUIDED_ABOVE_LAST_STEP, deep_cache=2, schedule="few_step",
                            window_batch=2, gpu_layout=True),
    "fast": SpeedPreset(max_steps=3, guidance_interval=GUIDED_ABOVE_LAST_STEP, deep_cache=2, schedule="few_step",
                        window_batch=2, gpu_layout=True, decode_context=1),
}
SPEEDS = tuple(SPEED_PRESETS)
