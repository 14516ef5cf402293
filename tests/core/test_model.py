import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel

from lipsync_core.configs import SayAnythingConfig
from lipsync_core.models import Conditioning, SayAnythingModel, edm_scalings, make_added_time_ids

FRAMES, LATENT = 4, 16


def _inputs(batch=1, frames=FRAMES, size=LATENT, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        sample=torch.randn(batch, frames, 9, size, size, generator=g),
        timestep=torch.full((batch,), 0.3),
        audio_features=torch.randn(batch, frames, 5, 10, 384, generator=g),
        added_time_ids=make_added_time_ids(25, 127, 0.02, batch),
    )


def test_shapes_and_id_residual_shapes(tiny_model):
    inputs = _inputs(batch=2)
    reference = torch.rand(2, 3, 4 * LATENT, 4 * LATENT) * 2 - 1
    id_features = tiny_model.encode_reference(reference)
    assert [tuple(f.shape) for f in id_features] == [(2, 32, 16, 16), (2, 64, 8, 8)]
    with torch.no_grad():
        out = tiny_model(**inputs, id_features=id_features)
    assert out.shape == (2, FRAMES, 4, LATENT, LATENT)
    assert torch.isfinite(out).all()


def test_fresh_model_ignores_reference_and_mask(tiny_config):
    torch.manual_seed(0)
    model = SayAnythingModel(tiny_config).eval()
    inputs = _inputs()
    assert all(torch.count_nonzero(p.weight) == 0 for p in model.id_guider.projections)
    assert torch.count_nonzero(model.unet.conv_in.weight[:, 8:]) == 0
    with torch.no_grad():
        plain = model(**inputs)
        ids = model.encode_reference(torch.rand(1, 3, 64, 64))
        inputs["sample"][:, :, 8:] = 1.0
        with_reference_and_mask = model(**inputs, id_features=ids)
    torch.testing.assert_close(plain, with_reference_and_mask, rtol=0, atol=0)


def test_equals_stock_diffusers_unet_with_shared_context(tiny_config):
    """Same tokens on every frame, no ID residuals, zero mask channel -> stock diffusers output."""
    torch.manual_seed(0)
    ours = SayAnythingModel(tiny_config).unet.eval()
    kwargs = tiny_config.unet.diffusers_kwargs()
    stock = UNetSpatioTemporalConditionModel(**dict(kwargs, in_channels=8)).eval()
    state = ours.state_dict()
    state["conv_in.weight"] = state["conv_in.weight"][:, :8]
    stock.load_state_dict(state, strict=True)

    inputs = _inputs()
    tokens = torch.randn(1, 3, tiny_config.unet.cross_attention_dim)
    with torch.no_grad():
        expected = stock(
            inputs["sample"][:, :, :8], inputs["timestep"], tokens, inputs["added_time_ids"], return_dict=False
        )[0]
        sample = inputs["sample"].clone()
        sample[:, :, 8:] = 0.0
        per_frame = tokens[:, None].expand(1, FRAMES, *tokens.shape[1:])
        actual = ours(sample, inputs["timestep"], per_frame, inputs["added_time_ids"], id_residuals=None)
        zero_ids = [torch.zeros(1, c, LATENT // 2**i, LATENT // 2**i) for i, c in enumerate((32, 64))]
        with_zero_ids = ours(sample, inputs["timestep"], per_frame, inputs["added_time_ids"], id_residuals=zero_ids)
    assert expected.abs().mean() > 0.05
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(with_zero_ids, expected, rtol=1e-5, atol=1e-5)


def test_temporal_blocks_see_other_frames_audio(tiny_model):
    """Changing one frame's audio changes other frames' output (temporal cross-attention over the window)."""
    inputs = _inputs()
    with torch.no_grad():
        before = tiny_model(**inputs)
        inputs["audio_features"][:, 0] = torch.randn_like(inputs["audio_features"][:, 0])
        after = tiny_model(**inputs)
    changed = (after - before).abs().flatten(2).amax(-1)[0]
    assert changed[0] > 1e-3
    assert (changed[1:] > 1e-5).all()


def test_audio_steers_output(tiny_model):
    inputs = _inputs()
    with torch.no_grad():
        a = tiny_model(**inputs)
        b = tiny_model(**dict(inputs, audio_features=torch.randn_like(inputs["audio_features"])))
        silent = tiny_model(**dict(inputs, audio_features=torch.zeros_like(inputs["audio_features"])))
        silent_again = tiny_model(**dict(inputs, audio_features=torch.zeros_like(inputs["audio_features"])))
    assert (a - b).abs().mean() > 1e-3
    assert (a - silent).abs().mean() > 1e-3
    torch.testing.assert_close(silent, silent_again, rtol=0, atol=0)


def test_reference_steers_output(tiny_model):
    inputs = _inputs()
    with torch.no_grad():
        plain = tiny_model(**inputs)
        ids = tiny_model.encode_reference(torch.rand(1, 3, 64, 64) * 2 - 1)
        steered = tiny_model(**inputs, id_features=ids)
        zeros = tiny_model(**inputs, id_features=tiny_model.zero_id_features(ids))
    assert (plain - steered).abs().mean() > 1e-3
    torch.testing.assert_close(plain, zeros, rtol=0, atol=0)


def test_denoise_matches_diffusers_euler_v_prediction(tiny_model):
    """Our EDM preconditioning equals diffusers' EulerDiscreteScheduler (v-prediction) arithmetic."""
    from diffusers import EulerDiscreteScheduler

    sigma = torch.tensor([3.0])
    c_skip, c_out, c_in, c_noise = edm_scalings(sigma)
    scheduler = EulerDiscreteScheduler(
        prediction_type="v_prediction", timestep_type="continuous", use_karras_sigmas=True,
        sigma_min=0.002, sigma_max=700.0, timestep_spacing="leading", steps_offset=1,
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
    )
    scheduler.set_timesteps(4)
    s0 = scheduler.sigmas[0]
    torch.testing.assert_close(scheduler.timesteps[0], edm_scalings(s0.reshape(1))[3][0], rtol=1e-5, atol=1e-5)
    x = torch.randn(1, FRAMES, 4, LATENT, LATENT)
    torch.testing.assert_close(
        scheduler.scale_model_input(x, scheduler.timesteps[0]), x * edm_scalings(s0.reshape(1))[2]
    )
    # denoise() = c_skip * x + c_out * model(c_in * x, c_noise, cond)
    g = torch.Generator().manual_seed(3)
    cond = Conditioning(
        masked_latents=torch.randn(1, FRAMES, 4, LATENT, LATENT, generator=g),
        mask=torch.ones(1, FRAMES, 1, LATENT, LATENT),
        audio_features=torch.randn(1, FRAMES, 5, 10, 384, generator=g),
        id_features=None,
        added_time_ids=make_added_time_ids(25, 127, 0.02),
    )
    with torch.no_grad():
        denoised = tiny_model.denoise(x, 3.0, cond)
        raw = tiny_model(
            torch.cat([x * c_in, cond.masked_latents, cond.mask], 2), c_noise, cond.audio_features, cond.added_time_ids
        )
    torch.testing.assert_close(denoised, c_skip * x + c_out * raw)


def test_config_json_round_trip_and_errors():
    for name in ("tiny", "full"):
        config = SayAnythingConfig.preset(name)
        assert SayAnythingConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown model size"):
        SayAnythingConfig.preset("huge")
    with pytest.raises(ValueError, match="one entry per UNet resolution"):
        SayAnythingConfig.from_dict(dict(SayAnythingConfig.preset("tiny").to_dict(), id_guider={"channels": [8]}))


def test_bad_audio_shape_says_what_is_expected(tiny_model):
    inputs = _inputs()
    inputs["audio_features"] = torch.zeros(1, FRAMES, 5, 8, 384)
    with pytest.raises(ValueError, match=r"\[layers, window, dim\] = \[5, 10, 384\]"):
        tiny_model(**inputs)


def test_gradient_checkpointing_gives_same_gradients(tiny_model):
    inputs = _inputs(frames=2, size=8)
    tiny_model.train()
    out = tiny_model(**inputs)
    grads = torch.autograd.grad(out.square().mean(), list(tiny_model.unet.parameters()), allow_unused=True)
    tiny_model.unet.enable_gradient_checkpointing()
    out2 = tiny_model(**inputs)
    grads2 = torch.autograd.grad(out2.square().mean(), list(tiny_model.unet.parameters()), allow_unused=True)
    torch.testing.assert_close(out, out2)
    for g1, g2 in zip(grads, grads2):
        if g1 is not None:
            torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)


def test_reference_of_another_size_is_resized_to_each_resolution(tiny_model):
    inputs = _inputs()
    with torch.no_grad():
        matching = tiny_model.encode_reference(torch.rand(1, 3, 4 * LATENT, 4 * LATENT) * 2 - 1)
        larger = tiny_model.encode_reference(torch.rand(1, 3, 8 * LATENT, 8 * LATENT) * 2 - 1)
        assert larger[0].shape[-1] == 2 * matching[0].shape[-1]
        out = tiny_model(**inputs, id_features=larger)
        plain = tiny_model(**inputs)
    assert out.shape == plain.shape and (out - plain).abs().mean() > 1e-3
