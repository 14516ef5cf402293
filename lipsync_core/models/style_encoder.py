"""Speaking-style encoder: how this person's mouth moves for these sounds (ours).

After the audio-aware style reference of style-preserving lip sync (arXiv 2408.05412): a reference clip
of the speaker is a set of (audio, mouth appearance) pairs, one per frame. The target's per-frame audio
attends to them, so a new sound borrows the mouth the speaker made for similar sounds: wide or barely
open, round or flat. Two outputs per frame, as in that paper's motion-then-render design:

- ``predict_mouth``: the lip motion the speaker would make (40 points' displacement from rest). For a
  model with a mouth-motion input it is rendered as the motion condition (``style.style_condition``),
  the input the UNet follows most closely;
- tokens of the audio projection's shape, added to the audio tokens of the UNet's cross-attention
  context. Their output layer starts at zero, so a model given a fresh encoder computes exactly what
  it did without one.

Training drops the style now and then (``TrainConfig.style_dropout``) so the model also works without a
reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import AudioProjectionConfig, StyleEncoderConfig
from ..motion import NUM_MOUTH_POINTS


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
        if config.lip_motion:  # the frame's lip points, displacement from rest in rest widths
            self.lips = nn.Sequential(nn.Linear(NUM_MOUTH_POINTS * 2, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            nn.init.zeros_(self.lips[-1].weight)  # an encoder given this input starts as the one without it
            nn.init.zeros_(self.lips[-1].bias)
        self.pair_norm = nn.LayerNorm(hidden)

        def layer(kind):
            return kind(hidden, config.num_heads, dim_feedforward=4 * hidden, dropout=0.0, activation="gelu",
                        batch_first=True, norm_first=True)

        self.reference_layer = layer(nn.TransformerEncoderLayer)  # the pairs see each other once
        self.layers = nn.ModuleList(layer(nn.TransformerDecoderLayer) for _ in range(config.num_layers))
        self.out_norm = nn.LayerNorm(hidden)
        # The speaker's mouth motion for the target's speech: the 40 lip points' displacement from rest, in
        # rest widths (``motion.in_rest_widths``). Trained on the target's landmarks
        # (TrainConfig.style_motion_weight); rendered, it is the motion condition of a model with one.
        self.motion_head = nn.Linear(hidden, NUM_MOUTH_POINTS * 2)
        nn.init.zeros_(self.motion_head.weight)  # starts at the resting mouth
        nn.init.zeros_(self.motion_head.bias)
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

    def encode_reference(self, frames: torch.Tensor, features: torch.Tensor,
                         lips: torch.Tensor | None = None) -> torch.Tensor:
        """The reference's (audio, mouth) pairs ``[B, R, hidden]`` from aligned crops ``[B, R, 3, S, S]`` in
        -1..1, their per-frame Whisper features ``[B, R, L, W, D]`` and, with ``config.lip_motion``, their lip
        points ``[B, R, 40, 2]`` (``motion.in_rest_widths`` of the reference's resting mouth); once per video."""
        if frames.ndim != 5 or frames.shape[2] != 3 or frames.shape[-1] != frames.shape[-2]:
            raise ValueError(f"style reference frames must be square aligned face crops [B, R, 3, S, S], "
                             f"got {list(frames.shape)}")
        if features.shape[:2] != frames.shape[:2]:
            raise ValueError(f"the style reference needs one Whisper feature window per frame: "
                             f"{list(frames.shape[:2])} frames but {list(features.shape[:2])} feature windows")
        batch, count = frames.shape[:2]
        mouths = self.mouth(self.mouth_crops(frames.flatten(0, 1))).reshape(batch, count, -1)
        if self.config.lip_motion:
            if lips is None or tuple(lips.shape) != (batch, count, NUM_MOUTH_POINTS, 2):
                raise ValueError(f"this style encoder also takes the reference's lip points [B, R, "
                                 f"{NUM_MOUTH_POINTS}, 2] = {[batch, count, NUM_MOUTH_POINTS, 2]}, got "
                                 f"{None if lips is None else list(lips.shape)}; encode the reference with its face "
                                 "track")
            mouths = mouths + self.lips(lips.flatten(2).to(mouths.dtype))
        pairs = self.pair_norm(self.embed_audio(features) + mouths)
        return self.reference_layer(pairs)

    def hidden(self, features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Per-frame style state ``[B, F, hidden]`` of the target's Whisper features ``[B, F, L, W, D]`` given
        the encoded reference ``[B or 1, R, hidden]``."""
        batch = features.shape[0]
        if reference.shape[0] != batch:
            reference = reference.expand(batch, *reference.shape[1:])
        x = self.embed_audio(features)
        for layer in self.layers:
            x = layer(x, reference.to(x.dtype))
        return self.out_norm(x)

    def predict_mouth(self, features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Each frame's lip displacement from rest ``[B, F, 40, 2]`` in rest widths, as the speaker would move."""
        state = self.hidden(features, reference)
        return self.motion_head(state).reshape(*state.shape[:2], NUM_MOUTH_POINTS, 2)

    def forward(self, features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Style tokens ``[B, F, N, C]`` for the target's Whisper features ``[B, F, L, W, D]`` given the
        encoded reference ``[B or 1, R, hidden]``."""
        batch, num_frames = features.shape[:2]
        tokens = self.to_tokens(self.hidden(features, reference))
        return tokens.reshape(batch, num_frames, self.audio_config.num_tokens, self.cross_attention_dim)

