"""The speaking-style encoder: zero-initialised, carried by the checkpoint, steering the sampler."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lipsync_core.checkpoint import load_checkpoint, save_checkpoint
from lipsync_core.configs import ModelDefaults, SayAnythingConfig, StyleEncoderConfig
from lipsync_core.models import Conditioning, SayAnythingModel, make_added_time_ids
from lipsync_core.pipeline import SayAnythingPipeline
from lipsync_core.plan import SamplingPlan
from tests.core.conftest import randomize_zero_inits

FRAMES, LATENT, REFERENCE = 4, 8, 6


def _style_config(tiny_config: SayAnythingConfig) -> SayAnythingConfig:
    return dataclasses.replace(tiny_config, style=StyleEncoderConfig(hidden_dim=32, num_heads=2, mouth_size=16))


def _features(config: SayAnythingConfig, *leading: int, seed: int = 3) -> torch.Tensor:
    audio = config.audio
    return torch.randn(*leading, audio.num_layers, audio.window, audio.feature_dim,
                       generator=torch.Generator().manual_seed(seed))


def _cond(config: SayAnythingConfig, style=None) -> Conditioning:
    generator = torch.Generator().manual_seed(4)
    return Conditioning(
        masked_latents=torch.randn(1, FRAMES, 4, LATENT, LATENT, generator=generator),
        mask=(torch.rand(1, FRAMES, 1, LATENT, LATENT, generator=generator) > 0.5).float(),
        audio_features=_features(config, 1, FRAMES),
        id_features=None,
        added_time_ids=make_added_time_ids(25, 127, 0.02),
        style=style,
    )


def _reference(model: SayAnythingModel, size: int = 32) -> torch.Tensor:
    frames = torch.rand(REFERENCE, 3, size, size, generator=torch.Generator().manual_seed(6)) * 2 - 1
    return model.encode_style(frames, _features(model.config, REFERENCE, seed=7))


def _liven(model: SayAnythingModel) -> SayAnythingModel:
    """Trained-like (random) weights in the encoder's zero-initialised output layer."""
    with torch.no_grad():
        model.style_encoder.to_tokens.weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(8))
    return model


def test_a_zero_initialised_style_encoder_leaves_the_model_unchanged(tiny_config):
    torch.manual_seed(0)
    base = randomize_zero_inits(SayAnythingModel(tiny_config).eval())
    styled = SayAnythingModel(_style_config(tiny_config)).eval()
    styled.load_state_dict({**styled.state_dict(), **base.state_dict()})
    noisy = torch.randn(1, FRAMES, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        reference = base.denoise(noisy, 2.0, _cond(tiny_config))
        style = _reference(styled)
        assert style.shape == (1, REFERENCE, 32)
        torch.testing.assert_close(styled.denoise(noisy, 2.0, _cond(styled.config, style)), reference, rtol=0, atol=0)
        torch.testing.assert_close(styled.denoise(noisy, 2.0, _cond(styled.config)), reference, rtol=0, atol=0)
        # once trained, the style tokens steer the output, and another reference steers it elsewhere
        _liven(styled)
        steered = styled.denoise(noisy, 2.0, _cond(styled.config, style))
        assert (steered - reference).abs().max() > 1e-3
        other = styled.encode_style(torch.zeros(REFERENCE, 3, 32, 32), _features(styled.config, REFERENCE, seed=9))
        assert (styled.denoise(noisy, 2.0, _cond(styled.config, other)) - steered).abs().max() > 1e-4
        # style_scale 0 is exactly no style: what style dropout and the no-audio branches rely on
        cond = _cond(styled.config, style)
        cond.style_scale = torch.zeros(1)
        torch.testing.assert_close(styled.denoise(noisy, 2.0, cond), reference, rtol=0, atol=0)


def test_a_fresh_style_encoder_predicts_the_resting_mouth(tiny_config):
    model = SayAnythingModel(_style_config(tiny_config)).eval()
    with torch.no_grad():
        motion = model.style_encoder.predict_mouth(_features(tiny_config, 2, FRAMES), _reference(model))
    assert motion.shape == (2, FRAMES, 40, 2)  # every lip point's displacement from rest
    assert not motion.any()  # zero-initialised: a style motion starts as the closed mouth


def test_the_reference_lips_join_the_pairs_and_start_at_zero(tiny_config):
    torch.manual_seed(0)
    plain = SayAnythingModel(_style_config(tiny_config)).eval()
    config = dataclasses.replace(tiny_config, style=dataclasses.replace(plain.config.style, lip_motion=True))
    lipped = SayAnythingModel(config).eval()
    missing, _ = lipped.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(key.startswith("style_encoder.lips.") for key in missing)
    frames = torch.rand(REFERENCE, 3, 32, 32, generator=torch.Generator().manual_seed(6)) * 2 - 1
    features = _features(tiny_config, REFERENCE, seed=7)
    lips = torch.randn(REFERENCE, 40, 2, generator=torch.Generator().manual_seed(8)) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(lipped.encode_style(frames, features, lips), plain.encode_style(frames, features),
                                   rtol=0, atol=0)  # zero-initialised: a fresh lip input changes nothing
        lipped.style_encoder.lips[-1].weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(9))
        wide, shut = lipped.encode_style(frames, features, lips * 3), lipped.encode_style(frames, features, lips * 0)
        assert (wide - shut).abs().max() > 1e-3  # once trained, how far the lips move is read
        with pytest.raises(ValueError, match=r"lip points \[B, R, 40, 2\]"):
            lipped.encode_style(frames, features)


def test_bad_style_inputs_get_clear_messages(tiny_config):
    base = SayAnythingModel(tiny_config).eval()
    with pytest.raises(ValueError, match="has no speaking-style input"):
        base.encode_style(torch.zeros(REFERENCE, 3, 32, 32), _features(tiny_config, REFERENCE))
    with pytest.raises(ValueError, match="has no speaking-style input"):
        base.denoise(torch.zeros(1, FRAMES, 4, LATENT, LATENT), 1.0, _cond(tiny_config, torch.zeros(1, 3, 32)))
    styled = SayAnythingModel(_style_config(tiny_config)).eval()
    with pytest.raises(ValueError, match="one Whisper feature window per frame"):
        styled.encode_style(torch.zeros(REFERENCE, 3, 32, 32), _features(tiny_config, REFERENCE - 1))
    with pytest.raises(ValueError, match="square aligned face crops"):
        styled.encode_style(torch.zeros(REFERENCE, 3, 32, 24), _features(tiny_config, REFERENCE))
    with pytest.raises(ValueError, match=r"must end in \[layers, window, dim\]"):
        styled.encode_style(torch.zeros(REFERENCE, 3, 32, 32), torch.zeros(REFERENCE, 5, 4, 384))
    with pytest.raises(ValueError, match="mouth_box"):
        StyleEncoderConfig(mouth_box=(0.5, 0.5, 0.4, 0.9))


def test_checkpoints_carry_the_style_encoder_and_old_configs_stay_as_they_were(tiny_config, tmp_path):
    assert "style" not in tiny_config.to_dict()
    torch.manual_seed(0)
    styled = _liven(SayAnythingModel(_style_config(tiny_config)).eval())
    path = save_checkpoint(tmp_path / "styled.safetensors", styled,
                           defaults=ModelDefaults.for_preset("tiny").replace(style_reference_frames=REFERENCE))
    loaded, _ = load_checkpoint(path)
    assert loaded.config.style == styled.config.style and loaded.defaults.style_reference_frames == REFERENCE
    for key, value in styled.style_encoder.state_dict().items():
        torch.testing.assert_close(loaded.style_encoder.state_dict()[key], value, rtol=0, atol=0)
    assert ModelDefaults().style_reference_frames == 0  # files without the key: no style support


def test_the_sampler_gives_the_style_to_the_audio_branches_only(tiny_config, tiny_vae):
    torch.manual_seed(0)
    model = _liven(randomize_zero_inits(SayAnythingModel(_style_config(tiny_config)).eval()))
    pipe = SayAnythingPipeline(model, tiny_vae)
    g = torch.Generator().manual_seed(0)
    frames, size = 6, 32
    video = torch.rand(frames, 3, size, size, generator=g) * 2 - 1
    mask = torch.zeros(frames, 1, size, size)
    mask[:, :, size // 2:, 8:24] = 1.0
    audio = _features(model.config, frames)
    plan = SamplingPlan(steps=2, window=4, overlap=1, seed=3)
    args = dict(reference=video[:1], plan=plan)
    with torch.no_grad():
        style = _reference(model)
    plain = pipe(video, mask, audio, **args)
    styled = pipe(video, mask, audio, style=style, **args)
    assert (styled - plain).abs().max() > 1e-3
    torch.testing.assert_close(pipe(video, mask, audio, reference=video[:1], style=style,
                                    plan=plan.replace(style_strength=0.0)), plain, rtol=0, atol=0)
    # Without audio guidance (scale 1) only the fully conditioned branch runs, and it holds the style;
    # with audio guidance 0 no branch has audio, so the style cannot act.
    silent_args = dict(args, plan=plan.replace(audio_guidance=0.0))
    torch.testing.assert_close(pipe(video, mask, audio, style=style, **silent_args),
                               pipe(video, mask, audio, **silent_args), rtol=0, atol=0)
