"""Fast sampling: guidance interval, deep-feature reuse, few-step schedule, batched windows.

``quality`` (the default ``SamplingPlan``) must be today's sampler bit for bit: it is checked against
the pre-issue-12 loop kept in ``sampler_reference.py``.
"""

import pytest
import torch

from lipsync_core.configs import ModelDefaults
from lipsync_core.models import Conditioning, DeepFeatureCache, make_added_time_ids
from lipsync_core.pipeline import SayAnythingPipeline, plan_windows
from lipsync_core.plan import SamplerOptions, SamplingPlan
from lipsync_core.speed import FEW_STEP_SIGMA_MIN, SPEED_PRESETS, few_step_sigmas
from tests.core.sampler_reference import reference_denoise
from tests.core.test_pipeline import SIZE as PIPELINE_SIZE
from tests.core.test_pipeline import _video as pipeline_inputs

SIZE = PIPELINE_SIZE  # 32: the tiny VAE downsamples 4x, 8x8 latents
FRAMES, WINDOW, OVERLAP = 11, 4, 1  # 4 windows, the last moved back
# Three guidance branches, the windows above, SVD's micro-conditioning.
PLAN = SamplingPlan(steps=4, reference_guidance=2.0, audio_guidance=3.0, window=WINDOW, overlap=OVERLAP, fps=25.0,
                    motion_bucket_id=127, noise_aug_strength=0.02)
DEFAULTS = ModelDefaults(crop_size=SIZE, window=WINDOW, overlap=OVERLAP, steps=4, **{
    "reference_guidance": 2.0, "audio_guidance": 3.0})


def _inputs(frames=FRAMES, seed=0):
    return pipeline_inputs(frames, seed)  # the pipeline tests' video, mask, audio and reference (same size)


@pytest.fixture
def pipe(tiny_model, tiny_vae):
    return SayAnythingPipeline(tiny_model, tiny_vae)


def _latents(pipe, plan=PLAN, seed=5, frames=FRAMES):
    video, mask, audio, reference = _inputs(frames)
    generator = torch.Generator().manual_seed(seed)
    latents = pipe.prepare_latents(frames, (SIZE, SIZE), plan, generator)
    pipe.encode_canvas(latents, 0, video, mask, plan, generator)
    return latents, audio, pipe.model.encode_reference(reference)


def _denoise(pipe, plan=PLAN, frames=FRAMES, **kwargs):
    latents, audio, ids = _latents(pipe, plan, frames=frames)
    pipe.denoise(latents, audio, ids, plan, **kwargs)
    return latents.latents


def _sample(pipe, speed: str, seed=3, **overrides):
    plan = SamplerOptions(speed=speed, seed=seed, **overrides).resolve(DEFAULTS)
    video, mask, audio, reference = _inputs()
    return pipe(video, mask, audio, reference=reference, plan=plan), video, mask


def test_quality_is_the_previous_sampler_bit_for_bit(pipe):
    latents, audio, ids = _latents(pipe)
    reference_denoise(pipe, latents, audio, ids, 4, 2.0, 3.0, WINDOW, OVERLAP, 25.0, 127, 0.02)
    assert torch.equal(_denoise(pipe), latents.latents)
    quality = SamplerOptions(speed="quality", noise_aug_strength=0.02).resolve(DEFAULTS)
    assert quality == PLAN  # the full sampler: the plan's defaults for every speed setting
    assert torch.equal(_denoise(pipe, quality), latents.latents)


@pytest.mark.parametrize("speed", list(SPEED_PRESETS))
def test_every_mode_gives_every_frame_and_the_same_video_for_a_seed(pipe, speed):
    first, video, mask = _sample(pipe, speed)
    again, _, _ = _sample(pipe, speed)
    other_seed, _, _ = _sample(pipe, speed, seed=4)
    assert first.shape == video.shape and torch.isfinite(first).all()
    assert torch.equal(first, again)
    assert (first - other_seed).abs().max() > 1e-3
    keep = (mask == 0).expand_as(video)
    assert torch.equal(first[keep], video[keep])


def test_faster_modes_change_the_work_not_the_frames(pipe):
    quality, video, mask = _sample(pipe, "quality")
    fast, _, _ = _sample(pipe, "fast")
    inside = (mask == 1).expand_as(video)
    assert (fast[inside] - quality[inside]).abs().mean() > 1e-4  # a different sampler ...
    assert fast.shape == quality.shape  # ... over the same frames


def _record_calls(pipe, monkeypatch):
    calls = []
    original = pipe.model.denoise

    def record(noisy, sigma, cond, deep_cache=None):
        calls.append({"batch": noisy.shape[0], "sigma": sigma, "cache": deep_cache,
                      "reuse": deep_cache is not None and deep_cache.reuse,
                      "window": cond.masked_latents[0, :, 0, 0, 0].clone()})
        return original(noisy, sigma, cond, deep_cache=deep_cache)

    monkeypatch.setattr(pipe.model, "denoise", record)
    return calls


def test_guidance_branches_run_only_inside_the_interval(pipe, monkeypatch):
    calls = _record_calls(pipe, monkeypatch)
    sigmas = pipe.sigmas(4)
    interval = (float(sigmas[2]), float(sigmas[1]))  # steps 2 and 3
    _denoise(pipe, PLAN.replace(guidance_interval=interval))
    windows = len(plan_windows(FRAMES, WINDOW, OVERLAP))
    assert len(calls) == 4 * windows
    for call in calls:
        inside = interval[0] <= call["sigma"] <= interval[1]
        assert call["batch"] == (3 if inside else 1)
    assert sorted({c["batch"] for c in calls}) == [1, 3]


def test_deep_features_are_kept_per_window_and_never_cross_windows_or_videos(pipe, monkeypatch):
    calls = _record_calls(pipe, monkeypatch)
    steps, interval = 5, 2
    _denoise(pipe, PLAN.replace(deep_cache=interval, steps=steps))
    windows = len(plan_windows(FRAMES, WINDOW, OVERLAP))
    # Deep blocks at steps 0, 2, 4 for every window, reused at steps 1 and 3.
    assert [c["reuse"] for c in calls] == [step % interval == 1 for step in range(steps) for _ in range(windows)]
    caches = [c["cache"] for c in calls[:windows]]
    assert len({id(cache) for cache in caches}) == windows  # one cache per window ...
    for number, call in enumerate(calls):
        assert call["cache"] is caches[number % windows]  # ... which only that window ever uses
        assert torch.equal(call["window"], calls[number % windows]["window"])
    calls.clear()
    _denoise(pipe, PLAN.replace(deep_cache=interval, steps=steps))  # the next video starts afresh
    assert not any(c["reuse"] for c in calls[:windows])
    assert not {id(c["cache"]) for c in calls} & {id(cache) for cache in caches}


def test_deep_features_are_not_reused_across_a_change_of_guidance_batch(pipe, monkeypatch):
    calls = _record_calls(pipe, monkeypatch)
    sigmas = pipe.sigmas(6)
    _denoise(pipe, PLAN.replace(deep_cache=3, guidance_interval=(float(sigmas[1]), 1000.0), steps=6))
    windows = len(plan_windows(FRAMES, WINDOW, OVERLAP))
    by_step = [calls[step * windows] for step in range(6)]
    assert [c["batch"] for c in by_step] == [3, 3, 1, 1, 1, 1]
    # Full forwards at steps 0 and 2 (a new batch), then every third step; the reused features always
    # come from a forward of the same batch size (DeepFeatureCache.take checks that too).
    assert [c["reuse"] for c in by_step] == [False, True, False, True, True, False]


def test_reused_deep_features_give_the_full_forward_at_the_same_inputs(tiny_model):
    # The shallow path (conv_in, first down block, last up block on fresh skips) plus the stored deep
    # features is the whole UNet: at identical inputs it must return the full forward's output.
    g = torch.Generator().manual_seed(0)
    batch, frames = 2, 3
    cond = Conditioning(
        masked_latents=torch.randn(batch, frames, 4, 8, 8, generator=g), mask=torch.ones(batch, frames, 1, 8, 8),
        audio_features=torch.randn(batch, frames, 5, 10, 384, generator=g),
        id_features=[f.expand(batch, *f.shape[1:]) for f in tiny_model.encode_reference(torch.zeros(1, 3, 32, 32))],
        added_time_ids=make_added_time_ids(25, 127, 0.02, batch))
    noisy = torch.randn(batch, frames, 4, 8, 8, generator=g)
    cache = DeepFeatureCache()
    with torch.no_grad():
        full = tiny_model.denoise(noisy, 2.0, cond, deep_cache=cache)
        cache.reuse = True
        reused = tiny_model.denoise(noisy, 2.0, cond, deep_cache=cache)
        later = tiny_model.denoise(noisy * 0.5, 0.5, cond, deep_cache=cache)
    torch.testing.assert_close(reused, full, rtol=1e-5, atol=1e-5)
    assert torch.equal(full, tiny_model.denoise(noisy, 2.0, cond).detach())  # storing changes nothing
    assert (later - full).abs().max() > 1e-3  # the shallow blocks do see the new step
    with pytest.raises(ValueError, match="before a full forward"):
        stale = DeepFeatureCache()
        stale.reuse = True
        tiny_model.denoise(noisy, 2.0, cond, deep_cache=stale)


def test_batched_windows_match_one_window_at_a_time(pipe, monkeypatch):
    one = _denoise(pipe).clone()
    calls = _record_calls(pipe, monkeypatch)
    batched = _denoise(pipe, PLAN.replace(window_batch=3))
    windows = len(plan_windows(FRAMES, WINDOW, OVERLAP))  # 4: a batch of 3 windows, then 1
    assert [c["batch"] for c in calls[:2]] == [3 * 3, 3 * (windows - 3)]
    torch.testing.assert_close(batched, one, rtol=1e-4, atol=1e-4)


def test_few_step_schedule():
    sigmas = few_step_sigmas(6, 700.0)
    assert len(sigmas) == 7 and sigmas[0] == pytest.approx(700.0) and sigmas[-1] == 0
    assert sigmas[-2] == pytest.approx(FEW_STEP_SIGMA_MIN)
    assert (sigmas[1:] < sigmas[:-1]).all()
    assert torch.equal(few_step_sigmas(1, 700.0), torch.tensor([700.0, 0.0]))


def test_speed_presets_fill_what_is_left_on_auto_and_a_user_value_wins():
    fast = SamplerOptions(speed="fast").resolve(DEFAULTS)
    preset = SPEED_PRESETS["fast"]
    assert fast.steps == min(DEFAULTS.steps, preset.max_steps)
    assert (fast.guidance_interval, fast.deep_cache, fast.schedule, fast.window_batch, fast.channels_last,
            fast.bf16_decode, fast.decode_context) == (preset.guidance_interval, preset.deep_cache, preset.schedule,
                                                       preset.window_batch, preset.gpu_layout, preset.gpu_layout,
                                                       preset.decode_context)
    mine = SamplerOptions(speed="fast", steps=9, deep_cache=1, schedule="karras", window_batch=1,
                          guidance_interval=(0.0, 1000.0)).resolve(DEFAULTS)
    assert mine.steps == 9 and mine == fast.replace(steps=9, guidance_interval=(0.0, 1000.0), deep_cache=1,
                                                    schedule="karras", window_batch=1)
    # A model file's own measured interval replaces the preset's (quality always guides everywhere).
    measured = DEFAULTS.replace(guidance_interval=(1.0, 50.0))
    assert SamplerOptions(speed="balanced").resolve(measured).guidance_interval == (1.0, 50.0)
    assert SamplerOptions(speed="quality").resolve(measured).guidance_interval is None
    assert ModelDefaults.from_json(measured.to_json()) == measured
    # Motion guidance: the file's own unless the user gives one; files without the key: 1 (no extra branch).
    pushing = DEFAULTS.replace(motion_guidance=2.5)
    assert SamplerOptions().resolve(pushing).motion_guidance == 2.5
    assert SamplerOptions(motion_guidance=1.0).resolve(pushing).motion_guidance == 1.0
    assert ModelDefaults.from_json('{"steps": 4}').motion_guidance == 1.0
    # Audio guidance while a style is given: the file's style value on auto; a user value and plain runs unchanged.
    styled = DEFAULTS.replace(audio_guidance=2.0, style_audio_guidance=0.5)
    assert SamplerOptions().resolve(styled, styled=True).audio_guidance == 0.5
    assert SamplerOptions().resolve(styled).audio_guidance == 2.0
    assert SamplerOptions(audio_guidance=3.0).resolve(styled, styled=True).audio_guidance == 3.0
    assert SamplerOptions().resolve(DEFAULTS, styled=True).audio_guidance == DEFAULTS.audio_guidance  # no key
    assert ModelDefaults.from_json(styled.to_json()) == styled
    with pytest.raises(ValueError, match="speed must be one of"):
        SamplerOptions(speed="ludicrous")
    with pytest.raises(ValueError, match="deep_cache"):
        SamplerOptions(deep_cache=0)


def test_preview_gets_each_windows_clean_estimate(pipe):
    previews = []
    _denoise(pipe, PLAN.replace(window_batch=2, steps=2), preview_callback=lambda start, x0: previews.append(
        (start, tuple(x0.shape))))
    windows = plan_windows(FRAMES, WINDOW, OVERLAP)
    assert previews == [(start, (WINDOW, 4, 8, 8)) for _ in range(2) for start, _ in windows]


def test_gpu_path_settings(tiny_model, monkeypatch):
    from diffusers.models.attention_processor import AttnProcessor2_0

    from lipsync_core.pipeline import prepare_unet

    unet = tiny_model.unet
    processors = unet.attn_processors
    assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors.values())  # SDPA everywhere
    compiled = []
    monkeypatch.setattr(unet, "compile", lambda: compiled.append(True))
    prepare_unet(unet, torch.device("cpu"), SamplingPlan(channels_last=True))
    assert not compiled and unet.conv_in.weight.is_contiguous()  # off by default; the layout is CUDA-only
    prepare_unet(unet, torch.device("cpu"), SamplingPlan(compile=True))
    assert compiled == [True]


def test_decode_takes_the_plans_chunk_and_context(pipe):
    from lipsync_core.pipeline import VideoLatents, decode_latents

    latents = torch.randn(10, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    video = VideoLatents(latents, torch.zeros_like(latents), torch.zeros(10, 1, 8, 8))
    for context in (0, 1, 2):
        plan = SamplingPlan(decode_chunk=4, decode_context=context)
        decoded = torch.cat([frames for _, frames in pipe.decode(video, plan)])
        assert torch.equal(decoded, decode_latents(pipe.vae, latents, chunk_size=4, context=context))
    assert not torch.equal(decode_latents(pipe.vae, latents, 4, context=0), decode_latents(pipe.vae, latents, 4))
    assert SPEED_PRESETS["quality"].decode_context == 2 and SPEED_PRESETS["fast"].decode_context == 1
