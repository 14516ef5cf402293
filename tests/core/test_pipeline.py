import pytest
import torch

from lipsync_core.pipeline import (
    SayAnythingPipeline,
    build_masked_video_conditioning,
    guidance_branches,
    plan_windows,
    window_blend_weights,
)
from lipsync_core.plan import SamplingPlan

SIZE = 32  # pixels; the tiny VAE downsamples 4x -> 8x8 latents
WINDOW, OVERLAP = 4, 2


def _video(frames, seed=0):
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


def _run(pipe, frames, callback=None, window_callback=None, **settings):
    video, mask, audio, reference = _video(frames)
    plan = SamplingPlan(**{**dict(steps=2, window=WINDOW, overlap=OVERLAP, seed=7, decode_chunk=3), **settings})
    out = pipe(video, mask, audio, reference=reference, plan=plan, callback=callback, window_callback=window_callback)
    return out, video, mask


@pytest.mark.parametrize("frames", [1, WINDOW - 1, WINDOW + 1, 7 * WINDOW // 2])  # 1, window-1, window+1, 3.5 windows
def test_output_has_exactly_the_input_frames_and_keeps_unmasked_pixels(pipe, frames):
    out, video, mask = _run(pipe, frames)
    assert out.shape == video.shape
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0
    keep = mask == 0
    assert torch.equal(out.expand_as(video)[keep.expand_as(video)], video[keep.expand_as(video)])
    edited = mask.expand_as(video) == 1
    assert (out[edited] - video[edited]).abs().mean() > 1e-3


def test_window_plans_cover_every_frame_with_normalised_weights():
    # 1 frame, window - 1, window + 1 and 3.5 windows (window 8, overlap 2: stride 6)
    for frames, window, overlap in [(1, 8, 2), (7, 8, 2), (9, 8, 2), (28, 8, 2), (14, 4, 2), (5, 5, 0), (100, 14, 4)]:
        windows = plan_windows(frames, window, overlap)
        weights = window_blend_weights(windows)
        coverage = torch.zeros(frames)
        for (start, end), w in zip(windows, weights):
            assert 0 <= start < end <= frames
            assert end - start == min(window, frames)
            assert (w > 0).all() and (w <= 1).all()
            coverage[start:end] += w
        assert windows[0][0] == 0 and windows[-1][1] == frames
        assert (coverage > 0).all()
        # neighbouring windows overlap by at least the requested overlap (no gaps, no seams)
        for (_, e0), (s1, _) in zip(windows, windows[1:]):
            assert e0 - s1 >= overlap
    assert plan_windows(28, 8, 2) == [(0, 8), (6, 14), (12, 20), (18, 26), (20, 28)]
    # in an overlap the weights ramp from one window to the next
    weights = window_blend_weights([(0, 8), (6, 14)])
    assert weights[0][-1] < weights[0][-2] <= 1 and weights[1][0] < weights[1][1] <= 1
    for bad in [(10, 0, 0), (10, 4, 4), (10, 4, -1), (0, 4, 1)]:
        with pytest.raises(ValueError):
            plan_windows(*bad)


def test_deterministic_for_a_seed(pipe):
    a, _, _ = _run(pipe, 6, seed=3)
    b, _, _ = _run(pipe, 6, seed=3)
    c, _, _ = _run(pipe, 6, seed=4)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_blending_is_seamless_for_a_frame_consistent_denoiser(pipe, monkeypatch):
    """When every window agrees on each frame's estimate, any window layout gives exactly that estimate.

    The network is replaced by a denoiser whose estimate depends only on the absolute frame (its masked
    latents); normalised blend weights then reproduce it everywhere -- overlaps, the moved-back last
    window and single windows alike -- so the sampler itself adds no seams.
    """
    monkeypatch.setattr(pipe.model, "denoise", lambda noisy, sigma, cond: cond.masked_latents.float().clone())
    results = [
        _run(pipe, 11, window=window, overlap=overlap)[0]
        for window, overlap in [(11, 0), (4, 2), (5, 1), (3, 0), (6, 5)]
    ]
    for result in results[1:]:
        torch.testing.assert_close(result, results[0], rtol=0, atol=1e-5)


def test_audio_steers_the_sampled_video(pipe):
    video, mask, audio, reference = _video(5)
    args = dict(plan=SamplingPlan(steps=2, window=5, overlap=1, seed=1), reference=reference)
    a = pipe(video, mask, audio, **args)
    b = pipe(video, mask, torch.randn_like(audio), **args)
    assert (a - b).abs().max() > 1e-3


def test_guidance_branches_and_combination(pipe, monkeypatch):
    assert [b.coefficient for b in guidance_branches(1.0, 1.0)] == [1.0]
    full = guidance_branches(2.0, 3.0)
    assert [(b.use_reference, b.use_audio) for b in full] == [(False, False), (True, False), (True, True)]
    assert sum(b.coefficient for b in full) == pytest.approx(1.0)

    # Zeroed audio equals the reference-only branch: with s_audio = 0 only uncond and ref run,
    # and giving zero audio features with s_audio = 1 is the same prediction.
    video, mask, audio, reference = _video(4)
    plan = SamplingPlan(steps=2, window=4, overlap=0, seed=2)
    ref_only = pipe(video, mask, audio, reference=reference,
                    plan=plan.replace(reference_guidance=1.0, audio_guidance=0.0))
    zero_audio = pipe(video, mask, torch.zeros_like(audio), reference=reference,
                      plan=plan.replace(reference_guidance=1.0, audio_guidance=1.0))
    torch.testing.assert_close(ref_only, zero_audio, rtol=1e-5, atol=1e-5)
    # ... and with zeroed audio the audio scale has nothing to amplify.
    zero_audio_strong = pipe(video, mask, torch.zeros_like(audio), reference=reference,
                             plan=plan.replace(reference_guidance=1.0, audio_guidance=4.0))
    torch.testing.assert_close(zero_audio_strong, zero_audio, rtol=1e-5, atol=1e-5)

    # The pipeline combines the batched branches as uncond + s_ref (ref - uncond) + s_audio (ref_audio - ref).
    model = pipe.model
    branch_outputs, combined = [], []
    original_denoise, original_guided = model.denoise, pipe._guided_denoise

    def record_denoise(noisy, sigma, cond):
        out = original_denoise(noisy, sigma, cond)
        branch_outputs.append((cond, out))
        return out

    def record_guided(*a, **k):
        out = original_guided(*a, **k)
        combined.append(out)
        return out

    monkeypatch.setattr(model, "denoise", record_denoise)
    monkeypatch.setattr(pipe, "_guided_denoise", record_guided)
    pipe(video, mask, audio, reference=reference,
         plan=plan.replace(reference_guidance=2.0, audio_guidance=3.0, steps=1))
    cond, out = branch_outputs[0]
    assert out.shape[0] == 3
    assert torch.count_nonzero(cond.audio_features[:2]) == 0 and torch.count_nonzero(cond.audio_features[2]) > 0
    assert all(torch.count_nonzero(f[0]) == 0 and torch.count_nonzero(f[1]) > 0 for f in cond.id_features)
    expected = out[0] + 2.0 * (out[1] - out[0]) + 3.0 * (out[2] - out[1])
    torch.testing.assert_close(combined[0][0], expected, rtol=1e-5, atol=1e-5)  # [windows of the call, F, ...]


def test_callback_reports_progress_and_cancels(pipe):
    calls = []

    def callback(step, total, denoised):
        calls.append((step, total, tuple(denoised.shape)))

    _run(pipe, 5, callback=callback, steps=3)
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)]
    assert calls[0][2] == (5, 4, 8, 8)

    class Cancelled(Exception):
        pass

    def cancel(step, total, denoised):
        raise Cancelled

    with pytest.raises(Cancelled):
        _run(pipe, 5, callback=cancel)


def test_window_callback_counts_every_window_of_every_step_and_cancels(pipe):
    frames = 7 * WINDOW // 2
    windows = len(plan_windows(frames, WINDOW, OVERLAP))
    calls = []
    _run(pipe, frames, steps=3, window_callback=lambda done, total: calls.append((done, total)))
    assert windows > 1
    assert calls == [(done, 3 * windows) for done in range(1, 3 * windows + 1)]

    class Cancelled(Exception):
        pass

    def cancel_in_second_window(done, total):
        if done == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        _run(pipe, frames, window_callback=cancel_in_second_window)


def test_masked_video_conditioning(tiny_vae):
    video, mask, _, _ = _video(3)
    latents, latent_mask = build_masked_video_conditioning(tiny_vae, video, mask)
    assert latents.shape == (3, 4, 8, 8) and latent_mask.shape == (3, 1, 8, 8)
    assert latent_mask[:, :, 4:, 2:6].eq(1).all() and latent_mask[:, :, :4].eq(0).all()
    # the content under the mask does not reach the conditioning
    altered = video.clone()
    altered[mask.expand_as(video) == 1] = 0.7
    again, _ = build_masked_video_conditioning(tiny_vae, altered, mask)
    torch.testing.assert_close(latents, again)
    # batched leading dims work (training)
    batched, batched_mask = build_masked_video_conditioning(tiny_vae, video[None], mask[None])
    torch.testing.assert_close(batched[0], latents)


def test_bad_inputs_have_clear_messages(pipe, tiny_model):
    video, mask, audio, reference = _video(4)
    with pytest.raises(ValueError, match="fit the audio"):
        pipe(video, mask, audio[:3], reference=reference)
    with pytest.raises(ValueError, match="exactly one of reference"):
        pipe(video, mask, audio)
    with pytest.raises(ValueError, match="multiple of the VAE factor"):
        pipe(video[..., :30, :30], mask[..., :30, :30], audio, reference=reference)
    from lipsync_core.configs import build_vae

    with pytest.raises(ValueError, match="downsamples 2x"):
        SayAnythingPipeline(
            tiny_model,
            build_vae(
                dict(pipe.vae.config, block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2)
            ),
        )


def test_precomputed_id_features_equal_reference(pipe):
    video, mask, audio, reference = _video(4)
    args = dict(plan=SamplingPlan(steps=2, window=4, overlap=0, seed=5))
    a = pipe(video, mask, audio, reference=reference, **args)
    b = pipe(video, mask, audio, id_features=pipe.model.encode_reference(reference), **args)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_real_speech_features_on_a_real_face(pipe, whisper_encoder, speech_wav, astronaut):
    """Real Whisper tiny.en features of real speech, the real portrait: speech and silence differ in
    the mouth region only, every frame comes back."""
    from lipsync_core.audio import Audio, load_audio

    frames = 6
    face = torch.from_numpy(astronaut).permute(2, 0, 1).float()[None] / 127.5 - 1
    face = torch.nn.functional.interpolate(face, size=(SIZE, SIZE), mode="area")
    video = face.expand(frames, -1, -1, -1).contiguous()
    mask = torch.zeros(frames, 1, SIZE, SIZE)
    mask[:, :, SIZE // 2 :, 8:24] = 1.0
    speech = whisper_encoder.frame_features(load_audio(speech_wav), fps=25, num_frames=frames)
    silence = whisper_encoder.frame_features(Audio(torch.zeros(16000), 16000), fps=25, num_frames=frames)
    assert speech.shape == (frames, 5, 10, 384)
    args = dict(reference=face, plan=SamplingPlan(steps=2, window=4, overlap=2, seed=0))
    talking = pipe(video, mask, speech, **args)
    quiet = pipe(video, mask, silence, **args)
    assert talking.shape == video.shape
    inside = mask.expand_as(video) == 1
    assert (talking[inside] - quiet[inside]).abs().mean() > 1e-3
    assert torch.equal(talking[~inside], video[~inside]) and torch.equal(quiet[~inside], video[~inside])


def test_model_only_ever_sees_one_window(pipe, monkeypatch):
    """Memory is bounded by the window: each model call gets the plan's window of frames, never the video."""
    frames_per_call = []
    original = pipe.model.denoise

    def record(noisy, sigma, cond):
        frames_per_call.append(noisy.shape[1])
        return original(noisy, sigma, cond)

    monkeypatch.setattr(pipe.model, "denoise", record)
    out, video, _ = _run(pipe, 15, steps=2)
    assert out.shape == video.shape
    windows = plan_windows(15, WINDOW, OVERLAP)
    assert frames_per_call == [WINDOW] * (2 * len(windows))


def test_bfloat16_model_follows_float32(tiny_model, tiny_vae):
    """Half-precision weights (what GPUs run) give the float32 result up to rounding."""
    import copy

    video, mask, audio, reference = _video(4)
    args = dict(reference=reference, plan=SamplingPlan(steps=2, window=4, overlap=0, seed=3))
    full = SayAnythingPipeline(tiny_model, tiny_vae)(video, mask, audio, **args)
    half = SayAnythingPipeline(copy.deepcopy(tiny_model).to(torch.bfloat16), tiny_vae)(video, mask, audio, **args)
    inside = mask.expand_as(video) == 1
    assert torch.isfinite(half).all()
    assert (half[inside] - full[inside]).abs().mean() < 0.05 * full[inside].abs().mean() + 0.02


def test_loaded_model_uses_the_stored_vae_or_asks_for_one(tmp_path, tiny_model, tiny_vae):
    from lipsync_core.checkpoint import load, save_checkpoint
    from tests.support.svd import write_tiny_svd_checkpoint

    with_vae = save_checkpoint(tmp_path / "with_vae.safetensors", tiny_model, vae=tiny_vae)
    without = save_checkpoint(tmp_path / "without.safetensors", tiny_model)
    pipe = load(with_vae).pipeline()
    video, mask, audio, reference = _video(3)
    args = dict(reference=reference, plan=SamplingPlan(steps=2, window=4, overlap=0, seed=1))
    expected = SayAnythingPipeline(tiny_model, tiny_vae)(video, mask, audio, **args)
    torch.testing.assert_close(pipe(video, mask, audio, **args), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="without.safetensors holds no VAE; choose your SVD checkpoint"):
        load(without)
    svd = write_tiny_svd_checkpoint(tmp_path / "svd_xt.safetensors")
    assert load(without, vae=svd).pipeline().vae.config.latent_channels == 4  # the SVD file's VAE


def test_a_new_plan_field_reaches_every_step_without_a_signature_change(pipe, monkeypatch):
    """The plan is one object from the caller to the model call: a setting added to it (here by a subclass)
    arrives in ``prepare_latents``, ``encode_canvas``, ``denoise``, the guided model call and ``decode``."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Extended(SamplingPlan):
        new_setting: str = "reached"

    seen = {}
    for step in ("prepare_latents", "encode_canvas", "denoise", "_guided_denoise", "decode"):
        original = getattr(pipe, step)

        def spy(*args, step=step, original=original, **kwargs):
            seen[step] = next(a for a in (*args, *kwargs.values()) if isinstance(a, SamplingPlan)).new_setting
            return original(*args, **kwargs)

        monkeypatch.setattr(pipe, step, spy)
    _run_plan = Extended(steps=1, window=WINDOW, overlap=OVERLAP)
    video, mask, audio, reference = _video(5)
    pipe(video, mask, audio, reference=reference, plan=_run_plan)
    assert seen == dict.fromkeys(("prepare_latents", "encode_canvas", "denoise", "_guided_denoise", "decode"),
                                 "reached")


def test_chunked_decode_has_no_colour_step_at_chunk_edges():
    # The shipped toy model's temporal decoder: decoded alone, a chunk's first and last frames drift in
    # colour (a flicker every 8 frames); decoded with neighbours on each side (mirrored at the ends of
    # the video) they look like the inner frames.
    import numpy as np

    from lipsync_core.checkpoint import load_checkpoint
    from lipsync_core.pipeline import decode_latents, encode_latents
    from lipsync_core.toy.demo import DEMO_MODEL
    from lipsync_core.toy.world import WorldConfig, generate_world

    _, vae = load_checkpoint(DEMO_MODEL)
    clip = generate_world(WorldConfig(train_identities=0, eval_identities=1, clips_per_identity=1, seed=5))[0]
    frames = torch.from_numpy(clip.frames[:32]).permute(0, 3, 1, 2).float() / 127.5 - 1
    latents = encode_latents(vae, frames)
    whole = decode_latents(vae, latents, chunk_size=32)
    plain, with_context = (decode_latents(vae, latents, chunk_size=8, context=c) for c in (0, 2))
    edges = np.isin(np.arange(32) % 8, [0, 7])

    def error(decoded, target):  # per frame, 0..255
        return (decoded - target).abs().mean(dim=(1, 2, 3)).numpy() * 127.5

    assert error(plain, whole)[edges].mean() > 4 * error(with_context, whole)[edges].mean()
    # Against the source, every frame is decoded alike: no step at chunk edges or at the video's ends.
    assert np.std(error(with_context, frames)) < 0.5 * np.std(error(plain, frames))
