"""SayAnythingModel: UNet + audio projection + ID-Guider, and the EDM denoiser call shared by sampling and training."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..configs import SayAnythingConfig
from ..motion import MOTION_CHANNELS
from .audio_projection import AudioProjection
from .id_guider import IDGuider
from .style_encoder import StyleEncoder
from .unet import DeepFeatureCache, SayAnythingUNet, widen_conv_in


@dataclass
class Conditioning:
    """Everything besides the noisy latents that one denoiser call sees (batch B, frames F).

    masked_latents: ``[B, F, 4, h, w]`` VAE latents of the masked video, unscaled (``latent_dist.mode()``,
        as SVD feeds its conditioning image) -- see ``pipeline.build_masked_video_conditioning``.
    mask: ``[B, F, 1, h, w]`` editing mask at latent resolution, 1 = regenerate.
    audio_features: ``[B, F, L, W, D]`` Whisper features; zeros are the "no audio" condition.
    id_features: one ``[B, C_i, h_i, w_i]`` map per UNet resolution from ``encode_reference``;
        None (or zeros) is the "no reference" condition.
    added_time_ids: ``[B, 3]`` from ``make_added_time_ids``.
    motion: ``[B, F, motion_channels, h, w]`` rendered mouth motion (``motion.render_motion``) for models
        with a motion input; None (or zeros) is the "no motion" condition.
    style: ``[B or 1, R, hidden]`` speaking-style reference from ``encode_style`` for models with a style
        encoder; None is the "no style" condition. ``style_scale`` ``[B]`` weighs its tokens per item (0:
        none, as training's style dropout and the guidance branches without audio have it).
    """

    masked_latents: torch.Tensor
    mask: torch.Tensor
    audio_features: torch.Tensor
    id_features: Sequence[torch.Tensor] | None
    added_time_ids: torch.Tensor
    motion: torch.Tensor | None = None
    style: torch.Tensor | None = None
    style_scale: torch.Tensor | None = None


def make_added_time_ids(
    fps: float,
    motion_bucket_id: float,
    noise_aug_strength: float,
    batch_size: int = 1,
    device=None,
    dtype=torch.float32,
) -> torch.Tensor:
    """SVD's micro-conditioning ``[fps - 1, motion_bucket_id, noise_aug_strength]`` per batch item."""
    ids = torch.tensor([[fps - 1.0, float(motion_bucket_id), float(noise_aug_strength)]], device=device, dtype=dtype)
    return ids.expand(batch_size, 3)


def edm_scalings(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM preconditioning of SVD (v-prediction, sigma_data = 1): ``c_skip, c_out, c_in, c_noise``.

    ``denoised = c_skip * x + c_out * F(c_in * x, c_noise)``, the same numbers diffusers'
    ``EulerDiscreteScheduler`` (v_prediction, continuous timesteps) uses for SVD.
    """
    sigma = sigma.to(torch.float32)
    c_skip = 1.0 / (sigma**2 + 1.0)
    c_out = -sigma / (sigma**2 + 1.0) ** 0.5
    c_in = 1.0 / (sigma**2 + 1.0) ** 0.5
    c_noise = 0.25 * sigma.log()
    return c_skip, c_out, c_in, c_noise


class SayAnythingModel(nn.Module):
    def __init__(self, config: SayAnythingConfig):
        super().__init__()
        self.config = config
        self.unet = SayAnythingUNet(**config.unet.diffusers_kwargs())
        self.audio_projection = AudioProjection(config.audio, config.unet.cross_attention_dim)
        self.id_guider = IDGuider(config.id_guider, config.unet.block_out_channels)
        if config.style is not None:
            self.style_encoder = StyleEncoder(config.style, config.audio, config.unet.cross_attention_dim)
        # The mask channel (the 9th input) and any motion channels start at zero so an SVD-initialised
        # model starts as SVD and a model given a motion input starts as the model without it.
        with torch.no_grad():
            self.unet.conv_in.weight[:, 8:].zero_()

    @property
    def parts(self) -> tuple[str, ...]:
        """The named sub-networks this model has (what a checkpoint stores)."""
        return ("unet", "audio_projection", "id_guider") + (("style_encoder",) if self.config.style else ())

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    def encode_reference(self, reference: torch.Tensor) -> list[torch.Tensor]:
        """ID features of ``reference [B, 3, H, W]`` in -1..1; compute once per video, reuse for every window
        and step."""
        return self.id_guider(reference.to(self.device, self.dtype))

    def zero_id_features(self, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The "no reference" condition, shaped like real ID features."""
        return [torch.zeros_like(feature) for feature in like]

    def encode_style(self, frames: torch.Tensor, audio_features: torch.Tensor,
                     lips: torch.Tensor | None = None) -> torch.Tensor:
        """The speaking-style reference ``[B, R, hidden]`` of aligned crops ``[(B,) R, 3, S, S]`` in -1..1, their
        per-frame Whisper features ``[(B,) R, L, W, D]`` and, for an encoder with ``lip_motion``, their lip
        points ``[(B,) R, 40, 2]`` (``StyleEncoder.encode_reference``); compute once per video."""
        if self.config.style is None:
            raise ValueError("This model has no speaking-style input (its config has no style encoder); "
                             "use a model trained with a style reference or leave the style out.")
        if frames.ndim == 4:
            frames, audio_features = frames[None], audio_features[None]
            lips = None if lips is None else lips[None]
        return self.style_encoder.encode_reference(frames.to(self.device, self.dtype),
                                                   audio_features.to(self.device, self.dtype),
                                                   None if lips is None else lips.to(self.device, self.dtype))

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        audio_features: torch.Tensor,
        added_time_ids: torch.Tensor,
        id_features: Sequence[torch.Tensor] | None = None,
        deep_cache: DeepFeatureCache | None = None,
        style: torch.Tensor | None = None,
        style_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw UNet output for ``sample [B, F, 9, h, w]`` (scaled noisy latents ++ masked latents ++ mask)."""
        audio_features = audio_features.to(self.device)
        context = self.audio_projection(audio_features)
        if style is not None:
            if self.config.style is None:
                raise ValueError("This model has no speaking-style input; give style=None.")
            tokens = self.style_encoder(audio_features, style)
            if style_scale is not None:
                tokens = tokens * style_scale.to(tokens.dtype).reshape(-1, 1, 1, 1)
            context = context + tokens
        return self.unet(
            sample, timestep, context.to(sample.dtype), added_time_ids, id_residuals=id_features, deep_cache=deep_cache
        )

    def denoise(
        self,
        noisy_latents: torch.Tensor,
        sigma: torch.Tensor | float,
        cond: Conditioning,
        deep_cache: DeepFeatureCache | None = None,
    ) -> torch.Tensor:
        """EDM denoiser: the clean-latent estimate for ``noisy_latents [B, F, 4, h, w]`` at noise level ``sigma``.

        The one implementation of the model call: the sampler and the training loss both go through it.
        ``sigma`` is a float or ``[B]``. Latents are in the VAE's scaled space (``* scaling_factor``).
        ``deep_cache``: reuse or refresh the UNet's deep features (``models.unet.DeepFeatureCache``).
        """
        batch_size = noisy_latents.shape[0]
        sigma = torch.as_tensor(sigma, device=noisy_latents.device, dtype=torch.float32).reshape(-1)
        sigma = sigma.expand(batch_size) if sigma.numel() == 1 else sigma
        c_skip, c_out, c_in, c_noise = (s.reshape(-1, 1, 1, 1, 1) for s in edm_scalings(sigma))
        dtype = self.dtype
        parts = [(noisy_latents * c_in).to(dtype), cond.masked_latents.to(dtype), cond.mask.to(dtype)]
        motion_channels = self.config.unet.motion_channels
        if cond.motion is not None and not motion_channels:
            raise ValueError("This model has no mouth-motion input (unet.motion_channels is 0); give motion=None.")
        if motion_channels:
            motion = cond.motion
            if motion is None:
                motion = cond.mask.new_zeros(*cond.mask.shape[:2], motion_channels, *cond.mask.shape[3:])
            if motion.shape[2] != motion_channels or motion.shape[3:] != cond.mask.shape[3:]:
                raise ValueError(
                    f"motion must be [B, F, {motion_channels}, {cond.mask.shape[3]}, {cond.mask.shape[4]}], "
                    f"got {list(motion.shape)}"
                )
            parts.append(motion.to(dtype))
        sample = torch.cat(parts, dim=2)
        # Noise level and micro-conditioning stay float32 (the sinusoidal embeddings cast after).
        output = self(
            sample,
            c_noise.reshape(-1),
            cond.audio_features,
            cond.added_time_ids.to(sample.device, torch.float32),
            cond.id_features,
            deep_cache,
            cond.style,
            cond.style_scale,
        )
        return c_skip * noisy_latents + c_out * output.to(torch.float32)

    def num_parameters(self) -> dict[str, int]:
        counts = {name: sum(p.numel() for p in getattr(self, name).parameters()) for name in self.parts}
        counts["total"] = sum(counts.values())
        return counts


def add_motion_input(model, channels: int = MOTION_CHANNELS):
    """A copy of a ``SayAnythingModel`` with a mouth-motion input: ``channels`` zero-initialised inputs added
    to ``conv_in`` (``unet.motion_channels``), so it computes exactly what ``model`` does until trained."""
    if model.config.unet.motion_channels:
        raise ValueError(f"the model already has a mouth-motion input ({model.config.unet.motion_channels} channels)")
    unet = dataclasses.replace(model.config.unet, in_channels=model.config.unet.in_channels + channels,
                               motion_channels=channels)
    widened = SayAnythingModel(dataclasses.replace(model.config, unet=unet))
    state = model.state_dict()
    prefix = "unet."
    unet_state = widen_conv_in({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)},
                               unet.in_channels)
    widened.load_state_dict({**state, **{prefix + k: v for k, v in unet_state.items()}})
    widened.defaults = getattr(model, "defaults", None)
    return widened.to(model.device, model.dtype)
