"""SayAnything UNet: diffusers' ``UNetSpatioTemporalConditionModel`` with per-frame context and ID residuals.

The module tree (and so the state-dict layout) is diffusers' own; only the forward is ours, to add:

* **Per-frame context.** ``encoder_hidden_states`` is ``[B, F, N, C]``: N audio tokens per frame.
  Spatial transformer blocks cross-attend to their own frame's N tokens. Temporal transformer blocks
  (ours) cross-attend to the tokens of *all* F frames of the window (F*N keys), so a pixel's temporal
  attention sees the speech before and after its frame (coarticulation). Stock diffusers gives the
  temporal blocks the first frame's context instead; with the same tokens on every frame the two are
  identical, because attending to F copies of the same keys gives the same softmax average.
  The temporal cross-attention runs every pixel of a frame as queries against one shared key/value set
  per batch item, so it costs no more memory than the stock single-token context.
* **ID residuals.** One ``[B, C_i, h_i, w_i]`` map per UNet resolution i (C_i = block_out_channels[i]),
  added to the hidden states after the last layer of down block i, before its downsampler (ours). The
  skip connection and the deeper path both carry it. Broadcast over the frames.
* **Feed-forwards in chunks** (ours). ``ff_chunks`` runs every transformer block's feed-forward on that many
  chunks of its rows (a GEGLU's inner activations, 8x the width, are the UNet's peak at full size): frames for
  the spatial blocks (diffusers' own chunking), pixels for the temporal ones, whose rows (every pixel's frame
  sequence, ``[B*H*W, F, C]``) also go to self-attention in those chunks; and a self-attention call never gets
  more than ``SDPA_MAX_BATCH`` rows x heads (CUDA kernels refuse larger batches on older torch). Rows are
  independent, so the result is the same up to float rounding.
* **Deep feature reuse** (DeepCache, Ma et al. 2024; optional). ``deep_cache`` keeps the input of the
  last up block from a full forward; a forward that reuses it runs only the shallow path (``conv_in``,
  the first down block without its downsampler, the last up block) on fresh skips and embeddings.

With the same context on every frame, zero ID residuals and zero weights on the mask input channel,
the output equals the stock diffusers UNet's (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import UNetSpatioTemporalConditionModel
from torch.utils.checkpoint import checkpoint

SDPA_MAX_BATCH = 65_535  # batch x heads of one scaled_dot_product_attention call (CUDA grid limit on torch < 2.8)


class SayAnythingUNet(UNetSpatioTemporalConditionModel):
    """diffusers' SVD UNet; ``forward`` takes per-frame context ``[B, F, N, C]`` and ID residuals.

    ``ff_chunks``: the transformer blocks' feed-forwards in this many chunks (1: all at once; the sampler sets
    it from its plan).
    """

    ff_chunks = 1

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        id_residuals: Sequence[torch.Tensor] | None = None,
        deep_cache: DeepFeatureCache | None = None,
    ) -> torch.Tensor:
        """Predict the model output for ``sample [B, F, in_channels, h, w]``.

        Args:
            sample: noisy latents (already scaled by c_in) concatenated with the conditioning channels.
            timestep: ``[B]`` or scalar noise level embedding input (EDM c_noise); float32 keeps its precision.
            encoder_hidden_states: ``[B, F, N, C]`` per-frame context tokens.
            added_time_ids: ``[B, 3]`` micro-conditioning (fps - 1, motion bucket, noise augmentation).
            id_residuals: one ``[B, C_i, h_i, w_i]`` tensor per resolution, or None for no reference.
            deep_cache: reuse its deep features if ``deep_cache.reuse`` is set, else compute and store them.

        Returns ``[B, F, out_channels, h, w]``.
        """
        batch_size, num_frames = sample.shape[:2]
        if encoder_hidden_states.ndim != 4 or encoder_hidden_states.shape[:2] != (batch_size, num_frames):
            raise ValueError(
                "encoder_hidden_states must be [batch, frames, tokens, channels] = "
                f"[{batch_size}, {num_frames}, N, C], "
                f"got {tuple(encoder_hidden_states.shape)}"
            )
        depth = len(self.down_blocks)
        if id_residuals is not None and len(id_residuals) != depth:
            raise ValueError(f"expected {depth} ID residuals (one per UNet resolution), got {len(id_residuals)}")

        # Upsampling must hit the skip connections' sizes when the latent size is not a multiple of 2**depth.
        forward_upsample_size = any(s % 2**self.num_upsamplers != 0 for s in sample.shape[-2:])

        # 1. time and micro-conditioning embeddings
        timesteps = timestep
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor([timesteps], dtype=torch.float32, device=sample.device)
        elif timesteps.ndim == 0:
            timesteps = timesteps[None]
        timesteps = timesteps.to(sample.device).expand(batch_size)
        emb = self.time_embedding(self.time_proj(timesteps).to(dtype=sample.dtype))
        time_embeds = self.add_time_proj(added_time_ids.flatten()).reshape(batch_size, -1).to(emb.dtype)
        emb = emb + self.add_embedding(time_embeds)
        emb = emb.repeat_interleave(num_frames, dim=0)

        # 2. context: own frame's tokens for spatial blocks, the whole window's tokens for temporal blocks
        frame_context = encoder_hidden_states.flatten(0, 1)
        window_context = encoder_hidden_states.flatten(1, 2)
        image_only_indicator = torch.zeros(batch_size, num_frames, dtype=sample.dtype, device=sample.device)
        context = _Context(frame_context, window_context, image_only_indicator, num_frames, self.ff_chunks)

        # 3. down (a forward reusing deep features stops before the first downsampler)
        reuse = deep_cache is not None and deep_cache.reuse
        hidden_states = self.conv_in(sample.flatten(0, 1))
        skips = [hidden_states]
        for index, block in enumerate(self.down_blocks):
            attentions = getattr(block, "attentions", [None] * len(block.resnets))
            for layer, (resnet, attention) in enumerate(zip(block.resnets, attentions)):
                hidden_states = _run_layer(block, resnet, attention, hidden_states, emb, context)
                if layer == len(block.resnets) - 1:
                    hidden_states = _add_id_residual(hidden_states, id_residuals, index, num_frames)
                skips.append(hidden_states)
            if reuse:
                break
            if block.downsamplers is not None:
                for downsampler in block.downsamplers:
                    hidden_states = downsampler(hidden_states)
                skips.append(hidden_states)

        # 4. mid and every up block but the last: the deep features
        if reuse:
            hidden_states = deep_cache.take(hidden_states)
        else:
            mid = self.mid_block
            hidden_states = _run_layer(mid, mid.resnets[0], None, hidden_states, emb, context)
            for attention, resnet in zip(mid.attentions, mid.resnets[1:]):
                hidden_states = _run_attention(mid, attention, hidden_states, context)
                hidden_states = _run_layer(mid, resnet, None, hidden_states, emb, context)
            for block in self.up_blocks[:-1]:
                hidden_states = _run_up_block(block, hidden_states, skips, emb, context, forward_upsample_size)
            if deep_cache is not None:
                deep_cache.store(hidden_states)

        # 5. the last up block (full resolution)
        hidden_states = _run_up_block(self.up_blocks[-1], hidden_states, skips, emb, context, forward_upsample_size)

        # 6. post-process
        hidden_states = self.conv_out(self.conv_act(self.conv_norm_out(hidden_states)))
        return hidden_states.reshape(batch_size, num_frames, *hidden_states.shape[1:])


class DeepFeatureCache:
    """The deep features of one window's batch (DeepCache): stored by a full forward, reused while ``reuse``.

    The sampler keeps one per window (and guidance batch) and sets ``reuse`` on the steps between two
    refreshes; a new video starts with new caches. ``storage``: where they wait between steps (the
    sampler keeps them on the CPU with the video's latents, so device memory stays bounded by the window).
    """

    def __init__(self, storage: torch.device | str | None = None) -> None:
        self.features: torch.Tensor | None = None
        self.reuse = False
        self.storage = storage

    def store(self, features: torch.Tensor) -> None:
        self.features = features if self.storage is None else features.to(self.storage)

    def take(self, like: torch.Tensor) -> torch.Tensor:
        if self.features is None or self.features.shape[0] != like.shape[0]:
            raise ValueError("deep features are reused before a full forward of the same batch stored them")
        return self.features.to(like.device, like.dtype)


def _run_up_block(block, hidden_states, skips: list[torch.Tensor], emb, context: _Context, forward_upsample_size):
    attentions = getattr(block, "attentions", [None] * len(block.resnets))
    for resnet, attention in zip(block.resnets, attentions):
        hidden_states = torch.cat([hidden_states, skips.pop()], dim=1)
        hidden_states = _run_layer(block, resnet, attention, hidden_states, emb, context)
    if block.upsamplers is not None:
        upsample_size = skips[-1].shape[2:] if forward_upsample_size and skips else None
        for upsampler in block.upsamplers:
            hidden_states = upsampler(hidden_states, upsample_size)
    return hidden_states


@dataclass
class _Context:
    """What every attention layer of one forward needs (kept together to keep signatures short)."""

    frame: torch.Tensor  # [B*F, N, C]: each frame's own tokens (spatial blocks)
    window: torch.Tensor  # [B, F*N, C]: all tokens of the window (temporal blocks)
    image_only_indicator: torch.Tensor
    num_frames: int
    ff_chunks: int = 1


def _add_id_residual(
    hidden_states: torch.Tensor, id_residuals: Sequence[torch.Tensor] | None, index: int, num_frames: int
) -> torch.Tensor:
    if id_residuals is None:
        return hidden_states
    residual = id_residuals[index].to(hidden_states.dtype)
    if residual.shape[-2:] != hidden_states.shape[-2:]:
        # A reference of another size than the frames: match the UNet's resolution.
        residual = F.interpolate(residual, size=hidden_states.shape[-2:], mode="bilinear", align_corners=False)
    residual = residual.repeat_interleave(num_frames, dim=0)
    return hidden_states + residual


def _run_layer(block, resnet, attention, hidden_states: torch.Tensor, emb: torch.Tensor, context: _Context):
    """One resnet (+ its spatio-temporal transformer), gradient-checkpointed when the block asks for it."""
    if torch.is_grad_enabled() and getattr(block, "gradient_checkpointing", False):
        hidden_states = checkpoint(resnet, hidden_states, emb, context.image_only_indicator, use_reentrant=False)
    else:
        hidden_states = resnet(hidden_states, emb, image_only_indicator=context.image_only_indicator)
    if attention is not None:
        hidden_states = _run_attention(block, attention, hidden_states, context)
    return hidden_states


def _run_attention(block, attention, hidden_states: torch.Tensor, context: _Context) -> torch.Tensor:
    if torch.is_grad_enabled() and getattr(block, "gradient_checkpointing", False):
        return checkpoint(
            spatio_temporal_transformer_forward,
            attention,
            hidden_states,
            context.frame,
            context.window,
            context.image_only_indicator,
            context.ff_chunks,
            use_reentrant=False,
        )
    return spatio_temporal_transformer_forward(
        attention, hidden_states, context.frame, context.window, context.image_only_indicator, context.ff_chunks
    )


def spatio_temporal_transformer_forward(
    module,
    hidden_states: torch.Tensor,
    frame_context: torch.Tensor,
    window_context: torch.Tensor,
    image_only_indicator: torch.Tensor,
    ff_chunks: int = 1,
) -> torch.Tensor:
    """Forward of a diffusers ``TransformerSpatioTemporalModel`` with per-frame and per-window context.

    ``hidden_states [B*F, C, H, W]``, ``frame_context [B*F, N, D]``, ``window_context [B, F*N, D]``;
    ``ff_chunks``: see ``SayAnythingUNet``.
    """
    batch_frames, _, height, width = hidden_states.shape
    num_frames = image_only_indicator.shape[-1]

    residual = hidden_states
    hidden_states = module.norm(hidden_states)
    inner_dim = hidden_states.shape[1]
    hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch_frames, height * width, inner_dim)
    hidden_states = module.proj_in(hidden_states)

    frame_index = torch.arange(num_frames, device=hidden_states.device).repeat(batch_frames // num_frames)
    frame_emb = module.time_pos_embed(module.time_proj(frame_index).to(dtype=hidden_states.dtype))[:, None, :]

    frames_per_chunk = _divisor_at_most(batch_frames, -(-batch_frames // ff_chunks)) if ff_chunks > 1 else None
    for block, temporal_block in zip(module.transformer_blocks, module.temporal_transformer_blocks):
        block.set_chunk_feed_forward(frames_per_chunk, dim=0)
        hidden_states = block(hidden_states, encoder_hidden_states=frame_context)
        mixed = _temporal_block_forward(temporal_block, hidden_states + frame_emb, num_frames, window_context,
                                        ff_chunks)
        hidden_states = module.time_mixer(
            x_spatial=hidden_states, x_temporal=mixed, image_only_indicator=image_only_indicator
        )

    hidden_states = module.proj_out(hidden_states)
    hidden_states = hidden_states.reshape(batch_frames, height, width, inner_dim).permute(0, 3, 1, 2).contiguous()
    return hidden_states + residual


def _temporal_block_forward(
    block, hidden_states: torch.Tensor, num_frames: int, window_context: torch.Tensor, chunks: int = 1
) -> torch.Tensor:
    """diffusers ``TemporalBasicTransformerBlock`` math; cross-attention against the whole window's tokens.

    Cross-attention treats every query independently, so all pixels' frame sequences of one batch item
    are laid out as one long query sequence against that item's ``[F*N, D]`` keys: the same result as
    giving every pixel its own copy of the context, without materialising those copies. The row-wise parts
    (feed-forwards, self-attention over the frames) run in ``chunks`` chunks of rows.
    """
    batch_frames, seq_length, channels = hidden_states.shape
    batch_size = batch_frames // num_frames
    hidden_states = hidden_states.reshape(batch_size, num_frames, seq_length, channels).permute(0, 2, 1, 3)
    hidden_states = hidden_states.reshape(batch_size * seq_length, num_frames, channels)
    rows = -(-hidden_states.shape[0] // max(1, chunks))
    attention_rows = min(rows, max(1, SDPA_MAX_BATCH // block.attn1.heads))

    def in_rows(function, values: torch.Tensor, size: int = rows) -> torch.Tensor:
        if values.shape[0] <= size:
            return function(values)
        return torch.cat([function(part) for part in values.split(size)])

    residual = hidden_states
    hidden_states = in_rows(lambda rows_: block.ff_in(block.norm_in(rows_)), hidden_states)
    if block.is_res:
        hidden_states = hidden_states + residual

    attended = in_rows(lambda rows_: block.attn1(block.norm1(rows_), encoder_hidden_states=None), hidden_states,
                       attention_rows)
    hidden_states = attended + hidden_states

    if block.attn2 is not None:
        queries = block.norm2(hidden_states).reshape(batch_size, seq_length * num_frames, channels)
        attended = block.attn2(queries, encoder_hidden_states=window_context)
        hidden_states = attended.reshape(batch_size * seq_length, num_frames, channels) + hidden_states

    ff_output = in_rows(lambda rows_: block.ff(block.norm3(rows_)), hidden_states)
    hidden_states = ff_output + hidden_states if block.is_res else ff_output

    hidden_states = hidden_states.reshape(batch_size, seq_length, num_frames, channels).permute(0, 2, 1, 3)
    return hidden_states.reshape(batch_size * num_frames, seq_length, channels)


def _divisor_at_most(count: int, limit: int) -> int:
    """The largest divisor of ``count`` not above ``limit`` (diffusers' chunking needs equal chunks)."""
    return next(size for size in range(max(1, min(limit, count)), 0, -1) if count % size == 0)


def widen_conv_in(state_dict: dict[str, torch.Tensor], in_channels: int) -> dict[str, torch.Tensor]:
    """Pad ``conv_in.weight`` of an SVD UNet state dict with zero input channels up to ``in_channels``.

    The added channels (our mask channel) then contribute nothing until training moves them.
    """
    weight = state_dict["conv_in.weight"]
    extra = in_channels - weight.shape[1]
    if extra < 0:
        raise ValueError(f"conv_in has {weight.shape[1]} input channels, more than the model's {in_channels}")
    if extra:
        zeros = weight.new_zeros(weight.shape[0], extra, *weight.shape[2:])
        state_dict = dict(state_dict, **{"conv_in.weight": torch.cat([weight, zeros], dim=1)})
    return state_dict
