"""The CUDA-only branches of the sampler, run on the CPU: channels-last on a CUDA device, bf16 only where the card
computes it natively, the VAE decode that halves its chunk on an out-of-memory error, deep features with spilled
latents and in bounded memory, the temporal blocks in chunks and below SDPA's batch limit, compile falling back."""

from __future__ import annotations

import logging

import pytest
import torch
from diffusers.models.attention import TemporalBasicTransformerBlock

from lipsync_core import checkpoint, compat, pipeline
from lipsync_core.models import unet as unet_module
from lipsync_core.pipeline import SayAnythingPipeline, VideoLatents, plan_windows
from lipsync_core.plan import SamplingPlan
from lipsync_core.streaming import SpilledFrames, frame_buffer
from tests.core.test_fast_sampling import PLAN, SIZE, _inputs


@pytest.fixture
def pipe(tiny_model, tiny_vae):
    return SayAnythingPipeline(tiny_model, tiny_vae)


def test_channels_last_on_cuda_converts_the_2d_convolutions_only(tiny_model):
    unet = tiny_model.unet
    conv3d = [m for m in unet.modules() if isinstance(m, torch.nn.Conv3d)]
    conv2d = [m for m in unet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert conv3d and conv2d  # the temporal resnets' 5-D weights are what broke unet.to(channels_last)
    with pytest.raises(RuntimeError, match="rank 4"):
        conv3d[0].weight.data.to(memory_format=torch.channels_last)  # what the whole-UNet conversion did
    pipeline.prepare_unet(unet, torch.device("cuda"), SamplingPlan(channels_last=True))
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in conv2d)
    assert all(m.weight.is_contiguous() for m in conv3d)


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), torch.float16), ((7, 0), torch.float16),
                                                      ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_precision_takes_bf16_only_where_the_card_computes_it(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)  # emulated bf16 says yes
    assert compat.native_bf16("cuda") == (expected == torch.bfloat16)
    assert checkpoint.resolve_dtype("auto", "cuda") == expected
    assert checkpoint.resolve_dtype("auto", "cpu") == torch.float32
    assert not compat.native_bf16("cpu")


def _latent_video(frames=10):
    latents = torch.randn(frames, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    return VideoLatents(latents, torch.zeros_like(latents), torch.zeros(frames, 1, 8, 8))


def test_decode_halves_its_chunk_on_out_of_memory_and_loses_nothing(pipe, monkeypatch, caplog):
    video = _latent_video()
    plan = SamplingPlan(decode_chunk=4)
    expected = torch.cat([frames for _, frames in pipe.decode(video, plan.replace(decode_chunk=1))])
    real, spans = pipeline.decode_span, []

    def small_card(vae, latents, start, stop, *args):
        if stop - start > 1:  # only one frame fits
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        spans.append((start, stop))
        return real(vae, latents, start, stop, *args)

    monkeypatch.setattr(pipeline, "decode_span", small_card)
    with caplog.at_level(logging.WARNING, logger="lipsync_core.pipeline"):
        chunks = list(pipe.decode(video, plan))
    assert [start for start, _ in chunks] == list(range(10)) and spans == [(i, i + 1) for i in range(10)]
    assert torch.equal(torch.cat([frames for _, frames in chunks]), expected)
    assert sum("decoding 1 frames at a time" in r.message for r in caplog.records) == 1  # 4 -> 2 -> 1, said once
    monkeypatch.setattr(pipeline, "decode_span", lambda *args: (_ for _ in ()).throw(torch.OutOfMemoryError("x")))
    with pytest.raises(torch.OutOfMemoryError, match="even one frame"):
        list(pipe.decode(video, plan))


def _denoise_with(pipe, plan, buffer, frames=11):
    video, mask, audio, reference = _inputs(frames)
    generator = torch.Generator().manual_seed(5)
    latents = pipe.prepare_latents(frames, (SIZE, SIZE), plan, generator, buffer=buffer)
    pipe.encode_canvas(latents, 0, video, mask, plan, generator)
    pipe.denoise(latents, audio, pipe.model.encode_reference(reference), plan)
    return latents


def test_deep_features_with_spilled_latents_give_the_in_memory_result(pipe):
    plan = PLAN.replace(deep_cache=2, steps=4)
    in_memory = _denoise_with(pipe, plan, torch.zeros).latents[:]
    spilled = _denoise_with(pipe, plan, lambda shape, dtype: frame_buffer(shape, dtype, spill_bytes=1))
    assert isinstance(spilled.latents, SpilledFrames)
    assert torch.equal(spilled.latents[:], in_memory)


@pytest.mark.parametrize("window_batch", [1, 2])
def test_deep_features_in_memory_do_not_grow_with_the_number_of_windows(pipe, monkeypatch, window_batch):
    """The features wait between steps in the video's buffer (spilled to disk when long): what is held in memory
    at a time is one window group's, whatever the length."""
    held = []
    original = pipeline._DeepFeatureStore.cache

    def measure(self, *args, **kwargs):
        cache = original(self, *args, **kwargs)
        held.append(sum(c.features.numel() for c in self.caches.values() if c.features is not None))
        return cache

    monkeypatch.setattr(pipeline._DeepFeatureStore, "cache", measure)
    spill = lambda shape, dtype: frame_buffer(shape, dtype, spill_bytes=1)  # noqa: E731
    peaks = {}
    for frames in (8, 32):
        held.clear()
        _denoise_with(pipe, PLAN.replace(deep_cache=2, steps=3, window_batch=window_batch), spill, frames)
        peaks[frames] = max(held)
    windows = {frames: len(plan_windows(frames, PLAN.window, PLAN.overlap)) for frames in peaks}
    assert windows[32] >= 3 * windows[8]
    assert peaks[32] == peaks[8] > 0


def test_temporal_rows_in_chunks_and_below_the_sdpa_batch_limit(tiny_model, monkeypatch):
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 9, 8, 8, generator=g)
    context = torch.randn(2, 4, 4, tiny_model.config.unet.cross_attention_dim, generator=g)
    time_ids = torch.zeros(2, 3)
    unet = tiny_model.unet
    with torch.no_grad():
        whole = unet(sample, 1.0, context, time_ids)
        unet.ff_chunks = 3
        chunked = unet(sample, 1.0, context, time_ids)
        batches = []
        hooks = [block.attn1.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0] * m.heads))
                 for block in unet.modules() if isinstance(block, TemporalBasicTransformerBlock)]
        monkeypatch.setattr(unet_module, "SDPA_MAX_BATCH", 40)
        unet.ff_chunks = 1
        capped = unet(sample, 1.0, context, time_ids)
        for hook in hooks:
            hook.remove()
    unet.ff_chunks = 1
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(capped, whole, rtol=1e-5, atol=1e-5)
    assert batches and max(batches) <= 40


def test_a_compile_that_fails_falls_back_to_the_uncompiled_unet(pipe, monkeypatch, caplog):
    expected = _denoise_with(pipe, PLAN.replace(steps=2), torch.zeros, frames=5).latents.clone()
    unet = pipe.model.unet

    def broken_compile():
        def fail(*args, **kwargs):
            raise RuntimeError("InductorError: no working C++ compiler found\nmore detail")
        unet._compiled_call_impl = fail

    monkeypatch.setattr(unet, "compile", broken_compile)
    with caplog.at_level(logging.WARNING, logger="lipsync_core.pipeline"):
        result = _denoise_with(pipe, PLAN.replace(steps=2, compile=True), torch.zeros, frames=5).latents
    assert torch.equal(result, expected)
    assert unet._compiled_call_impl is None
    assert [r.message for r in caplog.records if "compile" in r.message] == [
        "torch.compile failed (RuntimeError: InductorError: no working C++ compiler found); the UNet runs uncompiled"]
    # Where Triton is missing, a CUDA run does not try.
    monkeypatch.setattr(pipeline, "has_triton", lambda: False)
    monkeypatch.setattr(unet, "compile", lambda: pytest.fail("compiled without Triton"))
    pipeline.prepare_unet(unet, torch.device("cuda"), SamplingPlan(compile=True))


def test_sampling_previews_are_decoded_at_most_every_preview_seconds(tiny_model, tiny_vae, monkeypatch):
    from lipsync_core import inference
    from lipsync_core.checkpoint import LoadedModel
    from lipsync_core.configs import ModelDefaults

    tiny_model.defaults = ModelDefaults(crop_size=SIZE, window=4, overlap=1, steps=2)
    loaded = LoadedModel(tiny_model, tiny_vae, "tiny")
    video, mask, audio, reference = _inputs(11)
    crops = (video.permute(0, 2, 3, 1) + 1) / 2
    ids = loaded.encode_reference(crops[:1])
    windows = len(plan_windows(11, 4, 1))
    for seconds, expected in ((3600.0, 1), (0.0, 2 * windows)):
        monkeypatch.setattr(inference, "PREVIEW_SECONDS", seconds)
        previews = []
        inference.generate(loaded, crops, mask[:, 0], audio, ids, inference.SamplerOptions(), fps=25.0,
                           preview=previews.append)
        assert len(previews) == expected and previews[0].shape == (1, SIZE, SIZE, 3)


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), torch.float32), ((8, 6), torch.bfloat16)])
def test_the_vae_takes_comfyuis_precision_beside_a_half_precision_model(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert compat.vae_dtype("cuda", torch.float16) == expected
    assert compat.vae_dtype("cpu", torch.float16) == torch.float16  # the CPU keeps what was asked for
