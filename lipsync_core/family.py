"""What a model family is to the pack: ``LoadedModel`` (the interface the orchestrator, the nodes and ``run`` use)
and ``ModelFamily`` (a recogniser and a loader), with the registry ``checkpoint.load`` consults.

Below every family's own module (``checkpoint`` for SayAnything, ``musetalk``) so each can subclass
``LoadedModel`` and ``checkpoint`` can still import them all to register them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .configs import PRESETS, ModelDefaults, SayAnythingConfig
from .face import crop_transforms
from .pipeline import SayAnythingPipeline, guidance_branches
from .tensors import images_to_model


@dataclass
class LoadedModel:
    """A model file ready to run, whatever its family: what the Model Loader node outputs and ``run`` uses.

    ``model`` holds the family's networks, ``vae`` the VAE they decode with, ``defaults`` what the file says it
    wants at inference (crop size, mask, window, guidance...). The orchestrator (``lipsync_core.dubbing``) uses
    only this interface; another family subclasses it where its model differs: ``check_inputs`` (what it
    refuses before any work), ``audio_features`` (what the model hears), ``crop_transforms`` and ``crop_mask``
    (where it looks and what it may repaint), ``encode_reference`` (who it is), ``pipeline()`` (how it samples).
    """

    model: torch.nn.Module
    vae: torch.nn.Module
    path: str
    family: str = "SayAnything"

    @property
    def defaults(self) -> ModelDefaults:
        return getattr(self.model, "defaults", None) or ModelDefaults()

    def check_inputs(self, whisper, motion=None, style=None) -> None:
        """A clear error, before any work, for inputs this model cannot take (SayAnything: the orchestrator checks
        the motion and style against the model's own inputs)."""

    def audio_features(self, whisper, audio, fps, num_frames: int, buffer=torch.zeros, progress=None) -> torch.Tensor:
        """Per-frame audio features ``[T, ...]`` of ``audio`` fitted to ``num_frames`` frames at ``fps``, written into
        ``buffer(shape, dtype=...)`` as the encoder goes (SayAnything: Whisper windows ``[T, L, W, D]``)."""
        window = self.defaults.feature_window
        features = buffer((num_frames, whisper.num_hidden_states, window, whisper.hidden_size), dtype=torch.float32)
        whisper.frame_features(audio, fps, num_frames=num_frames, window=window, out=features, progress=progress)
        return features

    def crop_transforms(self, track, size: int, user_masks=None):
        """Frame -> crop transforms ``[T, 2, 3]`` and which frames get edited ``[T]`` (``face.crop_transforms``:
        aligned on the eyes and nose, as SayAnything trains)."""
        return crop_transforms(track, size, user_masks)

    def crop_mask(self, masks: torch.Tensor) -> torch.Tensor:
        """The crop-space editing mask ``[F, S, S]`` this model may repaint, from the pack's held mask (SayAnything:
        that mask as it is)."""
        return masks

    def pipeline(self) -> SayAnythingPipeline:
        """The family's sampling steps over aligned crops (``prepare_latents``, ``encode_canvas``, ``denoise``,
        ``decode``; ``SayAnythingPipeline`` documents them)."""
        return SayAnythingPipeline(self.model, self.vae)

    def encode_reference(self, reference: torch.Tensor) -> list[torch.Tensor]:
        """Identity features of one reference crop IMAGE ``[1, S, S, 3]`` (computed once per video)."""
        with torch.no_grad():
            features = self.model.encode_reference(images_to_model(reference).to(self.model.device, self.model.dtype))
        return [feature.detach().cpu() for feature in features]

    def guidance_branches(self, plan, motion: bool = False) -> int:
        """Model calls per window and step (the memory plan's multiplier): SayAnything's guidance branches."""
        return len(guidance_branches(plan.reference_guidance, plan.audio_guidance,
                                     plan.motion_guidance if motion else 1.0))

    def memory_size(self) -> tuple[str | None, int, int | None]:
        """``(memory.COSTS key, UNet first width, VAE decode context or None for the plan's)``: the model size
        preset whose measured costs apply (None: none matches)."""
        widths = self.model.config.unet.block_out_channels
        size = next((name for name in PRESETS if SayAnythingConfig.preset(name).unet.block_out_channels == widths),
                    None)
        return size, widths[0], None

    def torch_module(self) -> torch.nn.Module:
        """One module holding every weight (for ComfyUI's model management)."""
        return torch.nn.ModuleDict({"model": self.model, "vae": self.vae})


@dataclass(frozen=True)
class ModelFamily:
    """A kind of model file the pack runs: ``recognises(path, metadata, keys)`` on the file's header (safetensors
    metadata and tensor names; a pickle file's keys), ``load(path, vae, device, dtype) -> LoadedModel``."""

    name: str
    files: str  # what such a file is, for the message a file of no known family gets
    recognises: Callable[[Path, dict[str, str], list[str]], bool]
    load: Callable[..., LoadedModel]


FAMILIES: list[ModelFamily] = []


def register_family(family: ModelFamily) -> None:
    """Make ``load`` recognise another family's files (registered once per name)."""
    if all(known.name != family.name for known in FAMILIES):
        FAMILIES.append(family)
