"""Audio projection: Whisper encoder states around each video frame -> a few cross-attention tokens."""

from __future__ import annotations

import torch
from torch import nn

from ..configs import AudioProjectionConfig


class AudioProjection(nn.Module):
    """``[..., L, W, D]`` Whisper features (all L hidden states, W encoder frames) -> ``[..., N, C]`` tokens.

    Each encoder frame's L layer states are mixed by one linear layer (the model learns which layers
    carry lip-relevant phonetics), the W frames of the window by a second, which emits N tokens; a
    last linear layer and LayerNorm bring them to the cross-attention width C. Zero features (silence,
    and the "no audio" condition of guidance) pass through the same layers, so "no audio" is a learned
    constant context rather than a special case.
    """

    def __init__(self, config: AudioProjectionConfig, cross_attention_dim: int):
        super().__init__()
        self.config = config
        hidden = config.hidden_dim
        self.layer_mix = nn.Linear(config.num_layers * config.feature_dim, hidden)
        self.window_mix = nn.Linear(config.window * hidden, config.num_tokens * hidden)
        self.to_context = nn.Linear(hidden, cross_attention_dim)
        self.norm = nn.LayerNorm(cross_attention_dim)
        self.act = nn.SiLU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        config = self.config
        expected = (config.num_layers, config.window, config.feature_dim)
        if features.ndim < 3 or tuple(features.shape[-3:]) != expected:
            raise ValueError(
                f"Whisper features must end in [layers, window, dim] = {list(expected)}, got {list(features.shape)}; "
                "extract them with the same Whisper size and window as the model was built for"
            )
        leading = features.shape[:-3]
        # [..., L, W, D] -> [..., W, L*D]
        x = features.movedim(-3, -2).flatten(-2).to(self.layer_mix.weight.dtype)
        x = self.act(self.layer_mix(x))
        x = self.act(self.window_mix(x.flatten(-2)))
        x = x.reshape(*leading, config.num_tokens, config.hidden_dim)
        return self.norm(self.to_context(x))
