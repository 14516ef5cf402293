"""Mouth Motion from Audio: Whisper frame features -> per-frame lip landmarks (ours, after
AniPortrait's audio-to-landmark stage).

Input: the pipeline's per-frame Whisper features ``[B, T, L, W, D]`` (``WhisperAudioEncoder.frame_features``).
Each layer is normalised, the L layers are mixed with learned weights, each frame's window of W encoder
frames is flattened and projected, a few dilated temporal convolutions look at the neighbouring frames
(coarticulation), and a linear head gives the 40 lip points' displacement from the resting mouth in
units of the rest mouth width (so one model serves mouths of every size). ``rest`` (a buffer) is the
training data's mean rest shape in crop units, used when no target mouth is given.

File: safetensors, metadata ``{"format": "sayanything-mouth-motion", "format_version": "1",
"config": <MouthMotionConfig JSON>}``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..configs import CheckpointError
from ..motion import NUM_MOUTH_POINTS, MouthMotion, from_rest_widths

FORMAT = "sayanything-mouth-motion"
FORMAT_VERSION = "1"


@dataclass
class MouthMotionConfig:
    num_layers: int = 5  # Whisper hidden states per frame (tiny: embeddings + 4 layers)
    window: int = 10  # encoder frames per video frame
    feature_dim: int = 384  # Whisper d_model (tiny)
    hidden_dim: int = 256
    temporal_layers: int = 3  # dilations 1, 2, 4, ...
    kernel_size: int = 5
    fps: float = 25.0  # the frame rate the temporal layers were trained at; other rates are resampled

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MouthMotionConfig:
        values = json.loads(text)
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


class _TemporalBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels)
        padding = dilation * (kernel_size // 2)
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=padding, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(nn.functional.gelu(self.norm(x)))


class AudioToMouthMotion(nn.Module):
    """Whisper frame features ``[B, T, L, W, D]`` -> lip displacement ``[B, T, 40, 2]`` (rest widths)."""

    def __init__(self, config: MouthMotionConfig | None = None):
        super().__init__()
        self.config = config = config or MouthMotionConfig()
        self.layer_weights = nn.Parameter(torch.zeros(config.num_layers))
        self.frame_projection = nn.Sequential(
            nn.Linear(config.window * config.feature_dim, config.hidden_dim),
            nn.GELU(),
            nn.Linear(config.hidden_dim, config.hidden_dim),
        )
        self.temporal = nn.ModuleList(
            _TemporalBlock(config.hidden_dim, config.kernel_size, 2**k) for k in range(config.temporal_layers)
        )
        self.head = nn.Linear(config.hidden_dim, NUM_MOUTH_POINTS * 2)
        self.register_buffer("rest", torch.zeros(NUM_MOUTH_POINTS, 2))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        c = self.config
        if features.ndim != 5 or tuple(features.shape[2:]) != (c.num_layers, c.window, c.feature_dim):
            raise ValueError(
                f"Mouth motion model expects Whisper features [B, T, {c.num_layers}, {c.window}, {c.feature_dim}], "
                f"got {tuple(features.shape)} (use the Whisper model and window it was trained with)."
            )
        batch, frames = features.shape[:2]
        features = nn.functional.layer_norm(features.float(), (c.feature_dim,))
        mixed = torch.einsum("btlwd,l->btwd", features, self.layer_weights.softmax(0))
        hidden = self.frame_projection(mixed.reshape(batch, frames, -1)).transpose(1, 2)
        for block in self.temporal:
            hidden = block(hidden)
        return self.head(hidden.transpose(1, 2)).reshape(batch, frames, NUM_MOUTH_POINTS, 2)

    @torch.no_grad()
    def predict(self, features: torch.Tensor, fps: float, rest: np.ndarray | None = None) -> MouthMotion:
        """The mouth motion for per-frame features ``[T, L, W, D]`` computed at ``fps`` (the model's
        ``config.fps``; ``motion.mouth_motion_from_audio`` takes care of other rates). ``rest``: the
        target's resting mouth (crop units); default the training data's mean mouth."""
        rest = self.rest.cpu().numpy() if rest is None else np.asarray(rest, np.float32)
        param = next(self.parameters())
        displacement = self(features[None].to(param.device, param.dtype))[0].float().cpu().numpy()
        return MouthMotion(from_rest_widths(displacement, rest), fps, rest)


def save_mouth_motion_model(path: str | os.PathLike, model: AudioToMouthMotion) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().float().cpu().contiguous() for key, value in model.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_json()}
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    os.replace(partial, path)
    return path


def load_mouth_motion_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> AudioToMouthMotion:
    """Load a file written by ``save_mouth_motion_model``; a wrong or damaged file is a clear error."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No mouth motion model at {path} (folder {path.parent}).")
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from error
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a SayAnything mouth motion model (metadata format {metadata.get('format')!r}, "
            f"expected {FORMAT!r}; train one with `python -m lipsync_core train-motion`)."
        )
    model = AudioToMouthMotion(MouthMotionConfig.from_json(metadata["config"]))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not match its own config: {error}") from error
    return model.to(device).eval()
