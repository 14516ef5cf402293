"""The MuseTalk 1.5 family: its files as ``checkpoint.load`` recognises them, its computation on the pack's stages.

Upstream, per frame: a 256 px box around the face (``face.box_crop``), the crop with its lower half black and a
reference crop VAE-encoded (sd-vae-ft-mse), one UNet call at timestep 0 with the frame's Whisper tiny tokens,
decoded and blended back (``models.musetalk`` holds the formulas). Here that computation runs as one model family
of ``dubbing.dub``, so everything around it is the pack's: tracking with mediapipe's 478 landmarks, frames
without a face passed through bit for bit, any fps, exact frame counts, streaming in bounded memory, progress and
Cancel, the feathered paste-back through the crop-space mask.

Where the pack knows better, ``MuseTalkLoaded`` has a switch (default first, upstream's behaviour second):

* ``reference``: ``"reference_frame"``: one crop, of the run's reference frame, is every frame's reference;
  ``"own_frame"``: each frame's own unmasked crop, as upstream's inference does. That crop shows the source's
  mouth at that very instant, and the UNet can copy it instead of following the audio (leakage); one fixed
  frame shows who the person is, and its mouth, the same in every frame, says nothing about when to open.
* ``mask``: ``"held"``: the pack's held mask (``face.face_masks``: the jaw outlines of +-0.5 s, so its edge
  does not open and close with the source mouth) within the crop's lower half, whose top rows are faded in over
  the mask's feather; ``"lower_half"``: the whole lower half the UNet repainted, faded in the same way (upstream
  blends with a face-parsing mask, which the pack does not have).
* ``box_smoothing``: Gaussian smoothing of the box over frames in frames (``face.box_crop``; 0 = off, upstream).
  The box follows the chin, so unsmoothed the crop's scale breathes with the jaw.

VAE latents are the posterior mean (upstream samples), so a run is deterministic and the seed changes nothing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .audio import WHISPER_SAMPLE_RATE, Audio, resample
from .configs import CheckpointError, ModelDefaults, vae_scale_factor
from .face import crop_transforms
from .face.box_crop import DEFAULT_BOX_SIGMA, MUSETALK_CROP_SIZE, musetalk_crop_transforms
from .family import LoadedModel, ModelFamily
from .models.musetalk import (
    AUDIO_DIM,
    AUDIO_LAYERS,
    AUDIO_TOKENS,
    AUDIO_WINDOW,
    ENCODER_RATE,
    FORMAT,
    SEGMENT_SAMPLES,
    MuseTalkModel,
    check_musetalk_whisper,
    convert_musetalk,
    decode_latents,
    encode_crops,
    load_musetalk_safetensors,
    mask_lower_half,
    musetalk_audio_tokens,
    musetalk_audio_windows,
    musetalk_whisper_states,
    musetalk_window_indices,
)
from .models.sd_vae import load_sd_vae
from .plan import SamplingPlan
from .tensors import images_to_model

FAMILY_NAME = "MuseTalk 1.5"
REFERENCES = ("reference_frame", "own_frame")
MASKS = ("held", "lower_half")

# What MuseTalk 1.5 runs with (the converted file's "defaults"; upstream's unet.pth carries none): its 256 px crop
# at 25 fps, one UNet call (steps 1, no guidance, no canvas noise), frames in batches of 8 (upstream's default
# batch size; frames are independent, so no overlap), Whisper windows of 10 encoder frames, the pack's held
# mask up to the nose.
MUSETALK_DEFAULTS = ModelDefaults(
    crop_size=MUSETALK_CROP_SIZE,
    window=8,
    overlap=0,
    steps=1,
    reference_guidance=1.0,
    audio_guidance=1.0,
    noise_aug_strength=0.0,
    feature_window=AUDIO_WINDOW,
)  # fps and the mask settings: ModelDefaults' own (25 fps, the held mask up to the nose)
_FEATURE_CHUNK = 256  # video frames whose audio tokens are cut at once
_VAE_HINT = (
    "choose the Stable Diffusion 1.x VAE sd-vae-ft-mse (vae-ft-mse-840000-ema-pruned.safetensors from "
    "stabilityai/sd-vae-ft-mse-original, in ComfyUI's models/vae) as its VAE"
)


@dataclass
class MuseTalkLatents:
    """What a MuseTalk run holds per frame, ``[T, 4, h, w]`` scaled latents (any tensors, e.g. spilled to disk):
    ``masked_latents`` of the crops with their lower half black, ``reference_latents`` of each frame's own crop
    (only with ``reference="own_frame"``), ``latents`` the UNet's output."""

    latents: torch.Tensor
    masked_latents: torch.Tensor
    reference_latents: torch.Tensor | None

    @property
    def num_frames(self) -> int:
        return self.latents.shape[0]


class MuseTalkPipeline:
    """MuseTalk's computation as the pack's sampling steps (``SayAnythingPipeline``'s API): ``prepare_latents``,
    ``encode_canvas`` chunk by chunk, ``denoise`` (one UNet call per batch of ``plan.window`` frames), ``decode``
    per ``plan.decode_chunk``. ``own_reference``: each frame's own crop is its reference (upstream's choice)."""

    def __init__(self, model: MuseTalkModel, vae, own_reference: bool = False):
        self.model, self.vae, self.own_reference = model, vae, own_reference
        self.vae_scale_factor = vae_scale_factor(vae)
        if vae.config.latent_channels != 4:
            raise ValueError(f"the VAE has {vae.config.latent_channels} latent channels, MuseTalk's 4: {_VAE_HINT}")

    def prepare_latents(
        self,
        num_frames: int,
        size: tuple[int, int],
        plan: SamplingPlan,
        generator: torch.Generator,
        buffer: Callable[..., torch.Tensor] = torch.zeros,
    ) -> MuseTalkLatents:
        """Empty per-frame buffers from ``buffer(shape, dtype=...)`` (``streaming.frame_buffer`` spills them to a
        file). No noise: MuseTalk predicts the latents in one call."""
        height, width = size
        if num_frames < 1:
            raise ValueError("the video has no frames")
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"crop size {height}x{width} must be a multiple of the VAE's {self.vae_scale_factor}")
        shape = (num_frames, 4, height // self.vae_scale_factor, width // self.vae_scale_factor)
        return MuseTalkLatents(
            latents=buffer(shape, dtype=torch.float32),
            masked_latents=buffer(shape, dtype=torch.float32),
            reference_latents=buffer(shape, dtype=torch.float32) if self.own_reference else None,
        )

    @torch.no_grad()
    def encode_canvas(
        self,
        video: MuseTalkLatents,
        start: int,
        frames: torch.Tensor,
        mask: torch.Tensor,
        plan: SamplingPlan,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        """Latents of crops ``[F, 3, S, S]`` (-1..1) of frames ``[start, start + F)`` with their lower half black
        (MuseTalk's input; ``mask`` only decides the paste-back), and of the crops themselves with
        ``own_reference``. The VAE runs where it is (the model management placed it)."""
        end = start + frames.shape[0]
        if not 0 <= start < end <= video.num_frames:
            raise ValueError(f"frames {start}..{end} are outside the video's {video.num_frames} frames")
        video.masked_latents[start:end] = encode_crops(self.vae, mask_lower_half(frames)).float().cpu()
        if video.reference_latents is not None:
            video.reference_latents[start:end] = encode_crops(self.vae, frames).float().cpu()

    @torch.no_grad()
    def denoise(
        self,
        video: MuseTalkLatents,
        audio_features: torch.Tensor,
        id_features: torch.Tensor | None,
        plan: SamplingPlan | None = None,
        *,
        callback=None,
        window_callback: Callable[[int, int], None] | None = None,
        device: torch.device | str | None = None,
        motion: torch.Tensor | None = None,
        preview_callback=None,
        style: torch.Tensor | None = None,
    ) -> None:
        """The UNet once per batch of ``plan.window`` frames at timestep 0: masked and reference latents in,
        ``video.latents`` out. ``audio_features``: tokens ``[T, 50, 384]``; ``id_features``: the reference
        crop's latents ``[1, 4, h, w]`` (None with ``own_reference``). ``window_callback(done, total)`` after each
        batch (raising there cancels)."""
        if motion is not None or style is not None:
            raise ValueError("MuseTalk takes no mouth motion or speaking style; leave them out")
        plan = plan or SamplingPlan()
        num_frames = video.num_frames
        if tuple(audio_features.shape) != (num_frames, AUDIO_TOKENS, AUDIO_DIM):
            raise ValueError(f"audio_features must be MuseTalk's tokens [{num_frames}, {AUDIO_TOKENS}, {AUDIO_DIM}] "
                             f"(MuseTalkLoaded.audio_features), got {list(audio_features.shape)}")
        if video.reference_latents is None and id_features is None:
            raise ValueError("no reference: encode the reference frame's crop first (encode_reference)")
        starts = range(0, num_frames, plan.window)
        for done, start in enumerate(starts, 1):
            end = min(start + plan.window, num_frames)
            masked = video.masked_latents[start:end]
            if video.reference_latents is not None:
                reference = video.reference_latents[start:end]
            else:
                reference = id_features.expand(end - start, *id_features.shape[1:])
            out = self.model.lipsync_latents(masked, reference, audio_features[start:end])
            video.latents[start:end] = out.float().cpu()
            if window_callback is not None:
                window_callback(done, len(starts))
        if callback is not None:
            callback(1, 1, video.latents)

    def decode(
        self, video: MuseTalkLatents, plan: SamplingPlan | None = None, device: torch.device | str | None = None
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, crops [F, 3, S, S])`` (float32, CPU, -1..1), ``plan.decode_chunk`` frames at a time."""
        plan = plan or SamplingPlan()
        for start in range(0, video.num_frames, plan.decode_chunk):
            end = min(start + plan.decode_chunk, video.num_frames)
            with torch.no_grad():
                yield start, decode_latents(self.vae, video.latents[start:end]).cpu()


def lower_half_ramp(size: int, feather: float) -> torch.Tensor:
    """``[size, 1]``: 0 above the crop's middle row, rising to 1 over ``feather * size`` rows below it (the part
    of the crop MuseTalk repaints, faded in so the seam to the untouched upper half does not show)."""
    rows = torch.arange(size, dtype=torch.float32) + 0.5 - size / 2
    return (rows / max(feather * size, 1e-6)).clamp(0.0, 1.0)[:, None]


@dataclass
class MuseTalkLoaded(LoadedModel):
    """A MuseTalk 1.5 UNet (``model``: ``models.musetalk.MuseTalkModel``) with the SD VAE (``vae``), run by
    ``dubbing.dub``; ``reference``, ``mask`` and ``box_smoothing`` are the module's switches."""

    family: str = FAMILY_NAME
    file_defaults: ModelDefaults = field(default_factory=lambda: MUSETALK_DEFAULTS)
    reference: str = "reference_frame"
    mask: str = "held"
    box_smoothing: float = DEFAULT_BOX_SIGMA

    def __post_init__(self) -> None:
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, got {self.reference!r}")
        if self.mask not in MASKS:
            raise ValueError(f"mask must be one of {', '.join(MASKS)}, got {self.mask!r}")
        if self.box_smoothing < 0:
            raise ValueError(f"box_smoothing must be 0 (off) or more frames, got {self.box_smoothing}")

    @property
    def defaults(self) -> ModelDefaults:
        return self.file_defaults

    def with_choices(self, reference: str | None = None, mask: str | None = None,
                     box_smoothing: float | None = None) -> MuseTalkLoaded:
        """A copy with the given switches changed (None keeps one); the weights are shared."""
        changes = {"reference": reference, "mask": mask, "box_smoothing": box_smoothing}
        return dataclasses.replace(self, **{key: value for key, value in changes.items() if value is not None})

    def check_inputs(self, whisper, motion=None, style=None) -> None:
        given = [name for name, value in (("mouth motion", motion), ("speaking style", style))
                 if value is not None]
        if given:
            raise ValueError(
                f"{self.family} ({Path(self.path).name}) takes no {' and no '.join(given)}: mouth motion and "
                "speaking-style references steer SayAnything models only. Leave them unconnected, or pick a "
                "SayAnything model."
            )
        check_musetalk_whisper(whisper)

    def audio_features(self, whisper, audio, fps, num_frames: int, buffer=torch.zeros, progress=None) -> torch.Tensor:
        """MuseTalk's audio tokens ``[T, 50, 384]`` (``models.musetalk``: the multilingual Whisper tiny's 5 hidden
        states per 30 s segment, 10 encoder frames per video frame, plus the position encoding), written into
        ``buffer`` a piece at a time: the states ``[N, 5, 384]`` (50 Hz) first, then the tokens."""
        check_musetalk_whisper(whisper)
        waveform = audio.waveform
        if audio.sample_rate != WHISPER_SAMPLE_RATE:
            waveform = resample(waveform, audio.sample_rate, WHISPER_SAMPLE_RATE)
        hop = WHISPER_SAMPLE_RATE // ENCODER_RATE
        length = waveform.numel() // hop
        states = buffer((length, AUDIO_LAYERS, AUDIO_DIM), dtype=torch.float32)
        segments = range(0, length * hop, SEGMENT_SAMPLES)
        for done, start in enumerate(segments, 1):
            piece = musetalk_whisper_states(whisper, Audio(waveform[start : start + SEGMENT_SAMPLES],
                                                           WHISPER_SAMPLE_RATE))
            states[start // hop : start // hop + piece.shape[1]] = piece.permute(1, 0, 2)
            if progress is not None:
                progress(done, len(segments))
        tokens = buffer((num_frames, AUDIO_TOKENS, AUDIO_DIM), dtype=torch.float32)
        for start in range(0, num_frames, _FEATURE_CHUNK):
            count = min(_FEATURE_CHUNK, num_frames - start)
            indices = musetalk_window_indices(count, fps, first_frame=start)
            low = min(max(int(indices.min()), 0), length)
            high = min(max(int(indices.max()) + 1, low), length)
            windows = musetalk_audio_windows(states[low:high].permute(1, 0, 2), fps, count, first_frame=start,
                                             state_offset=low)
            tokens[start : start + count] = musetalk_audio_tokens(windows)
        return tokens

    def crop_transforms(self, track, size: int, user_masks=None):
        """MuseTalk's box crop (``face.box_crop``, smoothed by ``box_smoothing``); frames without a face but with a
        user's mask framed around it as ``face.crop_transforms`` does."""
        return crop_transforms(track, size, user_masks, face_transforms=lambda faces, side: musetalk_crop_transforms(
            faces, side, temporal_sigma=self.box_smoothing))

    def crop_mask(self, masks: torch.Tensor) -> torch.Tensor:
        """The held mask within the repainted lower half (``mask="held"``), or that whole half (``"lower_half"``)."""
        ramp = lower_half_ramp(masks.shape[-2], self.defaults.mask_feather)
        if self.mask == "lower_half":
            return ramp.expand(masks.shape).clone()
        return masks * ramp

    def encode_reference(self, reference: torch.Tensor) -> torch.Tensor | None:
        """The latents ``[1, 4, h, w]`` of the reference frame's crop IMAGE ``[1, S, S, 3]`` (None with
        ``reference="own_frame"``: every frame's own crop is encoded with the canvas)."""
        if self.reference == "own_frame":
            return None
        with torch.no_grad():
            return encode_crops(self.vae, images_to_model(reference)).float().cpu()

    def guidance_branches(self, plan, motion: bool = False) -> int:
        return 1  # one UNet call per frame batch, no guidance

    def memory_size(self) -> tuple[str | None, int, int | None]:
        return "musetalk", 320, 0  # memory.COSTS["musetalk"]; the SD VAE decodes frames alone, no context

    def pipeline(self) -> MuseTalkPipeline:
        return MuseTalkPipeline(self.model, self.vae, own_reference=self.reference == "own_frame")


def _recognises(path: Path, metadata: dict[str, str], keys: list[str]) -> bool:
    # Our converted file, or a plain state dict of a diffusers UNet (upstream's unet.pth): MuseTalk's loader
    # then names what it is if it is another UNet. safetensors written by diffusers say format "pt".
    return metadata.get("format") == FORMAT or (metadata.get("format") in (None, "pt") and "conv_in.weight" in keys)


def load_musetalk(
    path: str | os.PathLike, vae: str | os.PathLike | None = None, device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> MuseTalkLoaded:
    """A MuseTalk UNet (the ``.safetensors`` ``convert`` writes, or upstream's ``unet.pth`` with ``musetalk.json``
    beside it) and the SD VAE in ``vae`` (a file or a diffusers folder). Every tensor is checked before any is
    loaded; ``dtype`` None keeps the file's."""
    path = Path(path)
    if vae is None:
        raise CheckpointError(f"{path} is a {FAMILY_NAME} UNet, which holds no VAE: {_VAE_HINT}.")
    if path.suffix == ".safetensors" and _safetensors_metadata(path).get("format") == FORMAT:
        model = load_musetalk_safetensors(path, device, dtype)
        try:
            defaults = ModelDefaults.from_json(model.metadata.get("defaults"), base=MUSETALK_DEFAULTS)
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{path}: the defaults in its metadata are invalid: {error}") from error
    else:
        model, defaults = MuseTalkModel.from_upstream(path, None, device, dtype), MUSETALK_DEFAULTS
    return MuseTalkLoaded(model=model, vae=load_sd_vae(vae, device, dtype or model.dtype), path=str(path),
                          file_defaults=defaults)


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return handle.metadata() or {}


def convert(unet: str | os.PathLike, output: str | os.PathLike, config: str | os.PathLike | None = None,
            overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
    """Upstream's ``unet.pth`` (+ ``musetalk.json``, default: beside it) -> one ``.safetensors`` with the family
    and ``MUSETALK_DEFAULTS`` in its metadata (``models.musetalk.convert_musetalk``; checked before writing)."""
    return convert_musetalk(unet, config, output, overwrite=overwrite, dtype=dtype,
                            metadata={"defaults": MUSETALK_DEFAULTS.to_json()})


MUSETALK_FAMILY = ModelFamily(
    name=FAMILY_NAME,
    files="upstream's musetalkV15/unet.pth with musetalk.json beside it, or the .safetensors "
    "`python -m lipsync_core convert` writes from it",
    recognises=_recognises,
    load=load_musetalk,
)
