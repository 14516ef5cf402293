"""Fast sampling (issue 12): guidance interval, deep-feature reuse, few-step schedule, batched windows.

``quality`` (the default ``SpeedSettings``) must be today's sampler bit for bit: it is checked against
the pre-issue-12 loop kept in ``sampler_reference.py``.
"""

import pytest
import torch

from lipsync_core.configs import ModelDefaults
from lipsync_core.inference import SamplerOptions
from lipsync_core.speed import SPEED_PRESETS
from lipsync_core.models import DeepFeatureCache
from lipsync_core.pipeline import SayAnythingPipeline, SpeedSettings, few_step_sigmas, plan_windows
from tests.core.sampler_reference import reference_denoise

SIZE = 32  # the tiny VAE downsamples 4x: 8x8 latents
FRAMES, WINDOW, OVERLAP = 11, 4, 1  # 4 windows, the last moved back
GUIDANCE = dict(reference_guidance_scale=2.0, audio_guidance_scale=3.0)  # three branches


def _inputs(frames=FRAMES, seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(frames, 3, SIZE, SIZE, generator=g) * 2 - 1
    mask = torch.zeros(frames, 1, SIZE, SIZE)
    mask[:, :, SIZE // 2 :, 8:24] = 1.0
    audio = torch.randn(frames, 5, 10, 384, generator=g)
    reference = torch.rand(1, 3, SIZE, SIZE, generator=g) * 2 - 1
    return video, mask, audio, reference


@pytest.fixture
def pipe(tiny_model, tiny_vae):
    return SayAnythingPipeline(tiny_model, tiny_vae)


def _latents(pipe, steps, schedule="karras", seed=5):
    video, mask, audio, reference = _inputs()
    generator = torch.Generator().manual_seed(seed)
    latents = pipe.prepare_latents(FRAMES, (SIZE, SIZE), steps, generator, schedule=schedule)
    pipe.encode_canvas(latents, 0, video, mask, 0.02, generator)
    return latents, audio, pipe.model.encode_reference(reference)


def _denoise(pipe, speed=None, steps=4, **kwargs):
    latents, audio, ids = _latents(pipe, steps, speed.schedule if speed else "karras")
    args = dict(GUIDANCE, window_length=WINDOW, window_overlap=OVERLAP, fps=25.0, motion_bucket_id=127,
                noise_aug_strength=0.02)
    pipe.denoise(latents, audio, ids, steps, speed=speed, **args, **kwargs)
    return latents.latents


def test_quality_is_the_previous_sampler_bit_for_bit(pipe):
    latents, audio, ids = _latents(pipe, 4)
    reference_denoise(pipe, latents, audio, ids, 4, 2.0, 3.0, WINDOW, OVERLAP, 25.0, 127, 0.02)
    assert torch.equal(_denoise(pipe, SpeedSettings()), latents.latents)
    quality = SamplerOptions(speed="quality").resolve(ModelDefaults()).speed_settings()
    assert torch.equal(_denoise(pipe, quality), latents.latents)
