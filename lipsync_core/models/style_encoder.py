"""Speaking-style encoder: how this person's mouth moves for these sounds (issue 10, ours).

After the audio-aware style reference of style-preserving lip sync (arXiv 2408.05412): a reference clip
of the speaker is a set of (audio, mouth appearance) pairs, one per frame. The target's per-frame audio
attends to them, so a new sound borrows the mouth the speaker made for similar sounds: wide or barely
open, round or flat. The result is one set of tokens per frame, the audio projection's shape, added to
the audio tokens of the UNet's cross-attention context. The output layer starts at zero, so a model
given a fresh encoder computes exactly what it did without one; training drops the style now and then
(``TrainConfig.style_dropout``) so the model also works without a reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import AudioProjectionConfig, StyleEncoderConfig


class StyleEncoder(nn.Module):
    def __init__(self, config: StyleEncoderConfig, audio: AudioProjectionConfig, cross_attention_dim: int):
        super().__init__()
        self.config, self.audio_config = config, audio
        hidden = config.hidden_dim
        # Whisper features of a frame -> one vector: each layer's states normalised (their scales differ by
        # hundreds), layers mixed per encoder frame, then the window.
        self.audio_in_norm = nn.LayerNorm(audio.feature_dim)
        self.audio_layers = nn.Linear(audio.num_layers * audio.feature_dim, hidden)
        self.audio_window = nn.Linear(audio.window * hidden, hidden)
        self.audio_norm = nn.LayerNorm(hidden)
        # Mouth crop -> one vector; three halvings keep a coarse map, so height and width stay apart.
        cells = (config.mouth_size // 8) ** 2
        self.mouth = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(config.mouth_size // 8), nn.Flatten(), nn.Linear(64 * cells, hidden),
            nn.LayerNorm(hidden),  # as loud as the audio half of a pair
        )
        self.pair_norm = nn.LayerNorm(hidden)

        def layer(kind):
            return kind(hidden, config.num_heads, dim_feedforward=4 * hidden, dropout=0.0, activation="gelu",
                        batch_first=True, norm_first=True)

        self.reference_layer = layer(nn.TransformerEncoderLayer)  # the pairs see each other once
        self.layers = nn.ModuleList(layer(nn.TransformerDecoderLayer) for _ in range(config.num_layers))
        self.out_norm = nn.LayerNorm(hidden)
        self.to_tokens = nn.Linear(hidden, audio.num_tokens * cross_attention_dim)
        nn.init.zeros_(self.to_tokens.weight)
        nn.init.zeros_(self.to_tokens.bias)
        self.cross_attention_dim = cross_attention_dim

    def embed_audio(self, features: torch.Tensor) -> torch.Tensor:
        """``[..., L, W, D]`` Whisper features -> ``[..., hidden]``, layer-normalised."""
        audio = self.audio_config
        expected = (audio.num_layers, audio.window, audio.feature_dim)
        if features.ndim < 3 or tuple(features.shape[-3:]) != expected:
            raise ValueError(f"style reference audio features must end in [layers, window, dim] = {list(expected)}, "
                             f"got {list(features.shape)}; extract them with the model's Whisper size and window")
        x = self.audio_in_norm(features.to(self.audio_layers.weight.dtype)).movedim(-3, -2).flatten(-2)
        x = F.silu(self.audio_layers(x))
        return self.audio_norm(self.audio_window(x.flatten(-2)))

    def mouth_crops(self, frames: torch.Tensor) -> torch.Tensor:
        """The mouth box of aligned face crops ``[N, 3, S, S]`` (-1..1), resized to ``mouth_size``."""
        size = frames.shape[-1]
        left, top, right, bottom = (round(v * size) for v in self.config.mouth_box)
        box = frames[..., top:bottom, left:right].to(self.audio_layers.weight.dtype)
        return F.interpolate(box, size=(self.config.mouth_size,) * 2, mode="bilinear", align_corners=False,
                             antialias=True)

    def encode_reference(self, frames: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The reference's (audio, mouth) pairs ``[B, R, hidden]`` from aligned crops ``[B, R, 3, S, S]`` in
        -1..1 and their per-frame Whisper features ``[B, R, L, W, D]``; computed once per video."""
        if frames.ndim != 5 or frames.shape[2] != 3 or frames.shape[-1] != frames.shape[-2]:
            raise ValueError(f"style reference frames must be square aligned face crops [B, R, 3, S, S], "
                             f"got {list(frames.shape)}")
        if features.shape[:2] != frames.shape[:2]:
            raise ValueError(f"the style reference needs one Whisper feature window per frame: "
                             f"{list(frames.shape[:2])} frames but {list(features.shape[:2])} feature windows")
        batch, count = frames.shape[:2]
        mouths = self.mouth(self.mouth_crops(frames.flatten(0, 1))).reshape(batch, count, -1)
        pairs = self.pair_norm(self.embed_audio(features) + mouths)
        return self.reference_layer(pairs)

    def forward(self, features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Style tokens ``[B, F, N, C]`` for the target's Whisper features ``[B, F, L, W, D]`` given the
        encoded reference ``[B or 1, R, hidden]``."""
        batch, num_frames = features.shape[:2]
        if reference.shape[0] != batch:
            reference = reference.expand(batch, *reference.shape[1:])
        x = self.embed_audio(features)
        for layer in self.layers:
            x = layer(x, reference.to(x.dtype))
        tokens = self.to_tokens(self.out_norm(x))
        return tokens.reshape(batch, num_frames, self.audio_config.num_tokens, self.cross_attention_dim)
