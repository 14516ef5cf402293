"""The mouth-motion input of the UNet: zero-initialised, so a model given one is unchanged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lipsync_core.configs import SayAnythingConfig
from lipsync_core.models import Conditioning, SayAnythingModel, add_motion_input, make_added_time_ids
from lipsync_core.motion import MOTION_CHANNELS, MouthMotion, edit_motion, render_motion
from lipsync_core.plan import SamplingPlan
from tests.core.conftest import randomize_zero_inits

FRAMES, LATENT = 4, 8


def _motion_config(tiny_config: SayAnythingConfig) -> SayAnythingConfig:
    unet = dataclasses.replace(tiny_config.unet, in_channels=9 + MOTION_CHANNELS, motion_channels=MOTION_CHANNELS)
    return dataclasses.replace(tiny_config, unet=unet)


def _cond(config: SayAnythingConfig, motion=None) -> Conditioning:
    generator = torch.Generator().manual_seed(3)
    audio = config.audio
    return Conditioning(
        masked_latents=torch.randn(1, FRAMES, 4, LATENT, LATENT, generator=generator),
        mask=(torch.rand(1, FRAMES, 1, LATENT, LATENT, generator=generator) > 0.5).float(),
        audio_features=torch.randn(1, FRAMES, audio.num_layers, audio.window, audio.feature_dim, generator=generator),
        id_features=None,
        added_time_ids=make_added_time_ids(25, 127, 0.02),
        motion=motion,
    )


def _mouth(opening: float) -> MouthMotion:
    """An elliptic mouth (outer lips 0.2 x 0.08 crop units), inner lips open by ``opening`` (0..1)."""
    t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    outer = np.stack([0.5 + 0.1 * np.cos(t), 0.7 + 0.04 * np.sin(t)], axis=1)
    inner = np.stack([0.5 + 0.07 * np.cos(t), 0.7 + 0.03 * opening * np.sin(t)], axis=1)
    return MouthMotion(np.repeat(np.concatenate([outer, inner])[None], FRAMES, axis=0), 25)


def test_zero_initialised_motion_input_leaves_the_output_unchanged(tiny_config):
    torch.manual_seed(0)
    base = randomize_zero_inits(SayAnythingModel(tiny_config).eval())
    fresh = SayAnythingModel(_motion_config(tiny_config))
    assert (fresh.unet.conv_in.weight[:, 9:] == 0).all()  # a new model's motion channels start at zero
    with_motion = add_motion_input(base).eval()  # the same weights plus zero motion channels
    assert with_motion.config.unet.motion_channels == MOTION_CHANNELS

    noisy = torch.randn(1, FRAMES, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(5))
    motion = torch.from_numpy(render_motion(_mouth(1.0), LATENT))[None]
    with torch.no_grad():
        reference = base.denoise(noisy, 2.0, _cond(tiny_config))
        torch.testing.assert_close(with_motion.denoise(noisy, 2.0, _cond(with_motion.config, motion)), reference,
                                   rtol=0, atol=0)
        torch.testing.assert_close(with_motion.denoise(noisy, 2.0, _cond(with_motion.config)), reference,
                                   rtol=0, atol=0)
        # once trained (here: random weights) the motion does steer the output
        with_motion.unet.conv_in.weight[:, 9:] = 0.1
        assert not torch.allclose(with_motion.denoise(noisy, 2.0, _cond(with_motion.config, motion)), reference)
    with pytest.raises(ValueError, match="has no mouth-motion input"):
        base.denoise(noisy, 2.0, _cond(tiny_config, motion))
    with pytest.raises(ValueError, match=r"motion must be \[B, F, 2, 8, 8\]"):
        with_motion.denoise(noisy, 2.0, _cond(with_motion.config, motion[:, :, :1]))


def test_config_files_without_motion_stay_as_they_were(tiny_config):
    assert "motion_channels" not in tiny_config.to_dict()["unet"]
    config = _motion_config(tiny_config)
    assert SayAnythingConfig.from_json(config.to_json()).unet.motion_channels == MOTION_CHANNELS
    with pytest.raises(ValueError, match="9 canvas inputs plus motion_channels 2"):
        dataclasses.replace(tiny_config.unet, motion_channels=2)


def test_render_motion_follows_the_opening():
    size = 32
    closed, wide, half = (render_motion(_mouth(opening), size) for opening in (0.05, 1.0, 0.5))
    assert closed.shape == (FRAMES, MOTION_CHANNELS, size, size) and closed.dtype == np.float32
    assert 0 <= closed.min() and wide.max() <= 1
    # the interior's area follows the opening (ellipse area: pi * 0.07 * 0.03 * opening * size^2)
    assert wide[0, 0].sum() == pytest.approx(np.pi * 0.07 * 0.03 * size**2, rel=0.1)
    assert half[0, 0].sum() == pytest.approx(0.5 * wide[0, 0].sum(), rel=0.15)
    np.testing.assert_allclose(wide[:, 1].sum(), closed[:, 1].sum(), rtol=1e-6)  # outer lips: the same mouth
    gained = render_motion(edit_motion(MouthMotion(_mouth(0.5).points, 25, _mouth(0.0).rest), gain=2.0), size)
    np.testing.assert_allclose(gained, wide, atol=1e-6)


def test_the_sampler_passes_the_motion_to_the_unet(tiny_config, tiny_vae):
    from lipsync_core.pipeline import SayAnythingPipeline

    torch.manual_seed(0)
    model = randomize_zero_inits(SayAnythingModel(_motion_config(tiny_config)).eval())
    with torch.no_grad():
        model.unet.conv_in.weight[:, 9:] = 0.0  # as initialised: the motion cannot change anything yet
    pipe = SayAnythingPipeline(model, tiny_vae)
    g = torch.Generator().manual_seed(0)
    frames, size = 6, 32
    video = torch.rand(frames, 3, size, size, generator=g) * 2 - 1
    mask = torch.zeros(frames, 1, size, size)
    mask[:, :, size // 2:, 8:24] = 1.0
    audio = torch.randn(frames, 5, 10, 384, generator=g)
    args = dict(reference=video[:1], plan=SamplingPlan(steps=2, window=4, overlap=1, seed=3))
    latent = size // 4
    motion = torch.from_numpy(render_motion(MouthMotion(np.repeat(_mouth(1.0).points[:1], frames, 0), 25), latent))
    plain = pipe(video, mask, audio, **args)
    torch.testing.assert_close(pipe(video, mask, audio, motion=motion, **args), plain, rtol=0, atol=0)
    with torch.no_grad():
        model.unet.conv_in.weight[:, 9:] = 0.2  # trained: the motion steers the mouth region
    assert (pipe(video, mask, audio, motion=motion, **args) - plain).abs().max() > 1e-3
    with pytest.raises(ValueError, match="motion must be \\[T, channels, h, w\\] with T = 6 frames"):
        pipe(video, mask, audio, motion=motion[:5], **args)


def test_motion_guidance_pushes_past_the_motions_own_effect(tiny_config, tiny_vae, monkeypatch):
    from lipsync_core.pipeline import SayAnythingPipeline, guidance_branches

    assert len(guidance_branches(2.0, 3.0)) == len(guidance_branches(2.0, 3.0, 1.0)) == 3  # 1 = no extra branch
    branches = guidance_branches(1.0, 1.0, 2.5)
    assert [(b.coefficient, b.use_audio, b.use_motion) for b in branches] == [(2.5, True, True), (-1.5, True, False)]
    assert sum(b.coefficient for b in guidance_branches(2.0, 3.0, 2.0)) == pytest.approx(1.0)

    torch.manual_seed(0)
    model = add_motion_input(randomize_zero_inits(SayAnythingModel(tiny_config))).eval()
    with torch.no_grad():
        model.unet.conv_in.weight[:, 9:] = 0.1  # as if trained: the motion steers the output
    pipe = SayAnythingPipeline(model, tiny_vae)
    generator = torch.Generator().manual_seed(1)
    size = LATENT * pipe.vae_scale_factor
    frames = torch.rand(FRAMES, 3, size, size, generator=generator) * 2 - 1
    mask = torch.zeros(FRAMES, 1, size, size)
    mask[:, :, size // 2:] = 1.0
    config_audio = tiny_config.audio
    audio = torch.randn(FRAMES, config_audio.num_layers, config_audio.window, config_audio.feature_dim,
                        generator=generator)
    motion = torch.from_numpy(render_motion(_mouth(1.0), LATENT))
    plan = SamplingPlan(steps=1, window=FRAMES, overlap=0, seed=4)
    pushing = plan.replace(motion_guidance=3.0)

    plain = pipe(frames, mask, audio, reference=frames[:1], plan=plan)
    torch.testing.assert_close(pipe(frames, mask, audio, reference=frames[:1], plan=pushing), plain, rtol=0, atol=0)
    followed = pipe(frames, mask, audio, reference=frames[:1], plan=plan, motion=motion)
    pushed = pipe(frames, mask, audio, reference=frames[:1], plan=pushing, motion=motion)
    inside = mask.bool().expand_as(plain)
    assert (pushed - plain)[inside].abs().mean() > 1.5 * (followed - plain)[inside].abs().mean()

    # The batched call holds the motion in the guided branch and zeros in the one without it.
    seen, combined = [], []
    original_denoise, original_guided = model.denoise, pipe._guided_denoise

    def record_denoise(noisy, sigma, cond, **extra):
        seen.append((cond, original_denoise(noisy, sigma, cond, **extra)))
        return seen[-1][1]

    def record_guided(*args, **kwargs):
        combined.append(original_guided(*args, **kwargs))
        return combined[-1]

    monkeypatch.setattr(model, "denoise", record_denoise)
    monkeypatch.setattr(pipe, "_guided_denoise", record_guided)
    pipe(frames, mask, audio, reference=frames[:1], motion=motion,
         plan=pushing.replace(reference_guidance=1.0, audio_guidance=1.0))
    cond, out = seen[0]
    assert torch.count_nonzero(cond.motion[0]) > 0 and torch.count_nonzero(cond.motion[1]) == 0
    torch.testing.assert_close(combined[0][0], 3.0 * out[0] - 2.0 * out[1], rtol=1e-5, atol=1e-5)
