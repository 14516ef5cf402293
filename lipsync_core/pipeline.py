"""SayAnythingPipeline: masked-video lip sync with SVD's EDM Euler sampler, dual guidance and blended windows.

Also the pieces training shares with sampling: ``build_masked_video_conditioning`` (the editing canvas),
``encode_latents`` / ``decode_latents`` (VAE in chunks, scaled latents) and ``default_scheduler``. The
model call itself is ``SayAnythingModel.denoise``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .compat import has_triton, native_bf16
from .configs import vae_scale_factor
from .models import Conditioning, DeepFeatureCache, SayAnythingModel, make_added_time_ids
from .plan import SamplingPlan
from .speed import DECODE_CONTEXT, SCHEDULES, few_step_sigmas

logger = logging.getLogger(__name__)
StepCallback = Callable[[int, int, torch.Tensor], None]
WindowCallback = Callable[[int, int], None]
PreviewCallback = Callable[[int, torch.Tensor], None]


@dataclass
class VideoLatents:
    """What sampling holds for a whole video: latents only, ``[T, C, h, w]`` (``latent_mask`` ``[T, 1, h, w]``).

    ``latents`` start as noise and end as the sampled video; ``masked_latents`` and ``latent_mask`` are
    the editing canvas (``build_masked_video_conditioning``). Any tensors work, e.g. memory-mapped ones;
    ``buffer(shape, dtype=...)`` allocated them, and allocates what else grows with the video (deep features).
    """

    latents: torch.Tensor
    masked_latents: torch.Tensor
    latent_mask: torch.Tensor
    buffer: Callable[..., torch.Tensor] = torch.zeros

    @property
    def num_frames(self) -> int:
        return self.latents.shape[0]


def composite(generated: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Generated pixels where ``mask`` is 1, the input's elsewhere (exactly where it is 0): ``[F, 3, S, S]``."""
    mask = mask.float().cpu()
    return generated * mask + frames.float().cpu() * (1.0 - mask)


def default_scheduler():
    """diffusers' ``EulerDiscreteScheduler`` with Stable Video Diffusion's settings (we use its sigmas)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        timestep_type="continuous",
        interpolation_type="linear",
        use_karras_sigmas=True,
        sigma_min=0.002,
        sigma_max=700.0,
        timestep_spacing="leading",
        steps_offset=1,
    )


# ----------------------------------------------------------------------------------------------------
# VAE helpers (shared with training)


def _flatten_frames(video: torch.Tensor, channels: int, name: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    if video.ndim < 4 or video.shape[-3] != channels:
        raise ValueError(f"{name} must be [..., {channels}, height, width], got {list(video.shape)}")
    return video.reshape(-1, *video.shape[-3:]), tuple(video.shape[:-3])


@torch.no_grad()
def encode_latents(
    vae, frames: torch.Tensor, chunk_size: int = 8, scaled: bool = True, device: torch.device | str | None = None
) -> torch.Tensor:
    """VAE latents (distribution mode) of ``frames [..., 3, S, S]`` in -1..1, encoded ``chunk_size`` frames at a time.

    ``scaled``: multiply by the VAE's ``scaling_factor`` (the diffusion space of the noisy latents). The
    masked-video conditioning uses unscaled latents, as SVD does for its conditioning image.
    Results are returned on the CPU, in float32.
    """
    flat, leading = _flatten_frames(frames, 3, "frames")
    device = torch.device(device) if device is not None else vae.device
    chunks = []
    for start in range(0, flat.shape[0], max(1, chunk_size)):
        chunk = flat[start : start + chunk_size].to(device, vae.dtype)
        chunks.append(vae.encode(chunk).latent_dist.mode().float().cpu())
    latents = torch.cat(chunks)
    if scaled:
        latents = latents * vae.config.scaling_factor
    return latents.reshape(*leading, *latents.shape[1:])


@torch.no_grad()
def decode_latents(
    vae,
    latents: torch.Tensor,
    chunk_size: int = 8,
    device: torch.device | str | None = None,
    context: int = DECODE_CONTEXT,
) -> torch.Tensor:
    """Frames ``[T, 3, S, S]`` (float32, CPU, -1..1) from scaled latents ``[T, 4, h, w]``, decoded in chunks.

    The temporal decoder smooths across the frames of one chunk; each chunk is decoded with ``context``
    neighbouring frames on both sides, so that every kept frame has neighbours.
    """
    if latents.ndim != 4:
        raise ValueError(f"latents must be [frames, channels, height, width], got {list(latents.shape)}")
    chunk_size = max(1, chunk_size)
    return torch.cat([
        decode_span(vae, latents, start, min(start + chunk_size, latents.shape[0]), context, device)
        for start in range(0, latents.shape[0], chunk_size)
    ])


@torch.no_grad()
def decode_span(
    vae, latents: torch.Tensor, start: int, stop: int, context: int = DECODE_CONTEXT,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Frames ``start:stop`` of scaled latents ``[T, 4, h, w]``, decoded with ``context`` frames around them
    (mirrored at the ends of the video, so its first and last frames get neighbours too)."""
    device = torch.device(device) if device is not None else vae.device
    last = latents.shape[0] - 1
    first = max(start - context, 0)
    span = latents[first : min(stop + context, last + 1)]  # one contiguous read (latents may be on disk)
    index = torch.arange(start - context, stop + context).abs()
    index = torch.where(index > last, 2 * last - index, index).clamp(0, last)  # mirrored: inside the span
    chunk = (span[index - first] / vae.config.scaling_factor).to(device, vae.dtype)
    frames = vae.decode(chunk, num_frames=chunk.shape[0]).sample
    return frames[context : context + stop - start].float().clamp(-1, 1).cpu()


def downsample_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Mask ``[..., 1, S, S]`` -> ``[..., 1, h, w]``; max-pooled so any latent cell touching the edit region
    is regenerated."""
    flat, leading = _flatten_frames(mask, 1, "mask")
    pooled = F.adaptive_max_pool2d(flat.float(), size)
    return pooled.reshape(*leading, 1, *size)


@torch.no_grad()
def build_masked_video_conditioning(
    vae,
    frames: torch.Tensor,
    mask: torch.Tensor,
    noise_aug_strength: float = 0.0,
    generator: torch.Generator | None = None,
    chunk_size: int = 8,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The editing canvas: ``(masked_latents [..., 4, h, w], latent_mask [..., 1, h, w])``, CPU float32.

    ``frames [..., 3, S, S]`` in -1..1 and ``mask [..., 1, S, S]`` (1 = regenerate). Masked pixels are set
    to 0 (mid grey), optional noise augmentation is added in pixel space as SVD does for its
    conditioning image (noise drawn on the CPU from ``generator``), and the result is VAE-encoded
    unscaled (``latent_dist.mode()``, like SVD's image latents).
    """
    if frames.shape[:-3] != mask.shape[:-3] or frames.shape[-2:] != mask.shape[-2:]:
        raise ValueError(
            f"frames {list(frames.shape)} and mask {list(mask.shape)} must cover the same frames and pixels"
        )
    masked = frames.float() * (1.0 - mask.float())
    if noise_aug_strength > 0:
        noise = torch.randn(masked.shape, generator=generator, dtype=torch.float32)
        masked = masked + noise_aug_strength * noise
    masked_latents = encode_latents(vae, masked, chunk_size=chunk_size, scaled=False, device=device)
    return masked_latents, downsample_mask(mask, tuple(masked_latents.shape[-2:]))


# ----------------------------------------------------------------------------------------------------
# Windows


def plan_windows(num_frames: int, window_length: int, window_overlap: int) -> list[tuple[int, int]]:
    """``[start, end)`` windows covering ``num_frames``: stride ``window_length - window_overlap``.

    Every window has ``window_length`` frames (or the whole video if it is shorter); the last one is
    moved back to end at the last frame rather than dropped or shortened, so it overlaps its neighbour
    by more than ``window_overlap``.
    """
    if num_frames < 1:
        raise ValueError("the video has no frames")
    if window_length < 1:
        raise ValueError(f"window_length must be at least 1, got {window_length}")
    if not 0 <= window_overlap < window_length:
        raise ValueError(f"window_overlap must be in 0..window_length-1 ({window_length - 1}), got {window_overlap}")
    if num_frames <= window_length:
        return [(0, num_frames)]
    stride = window_length - window_overlap
    starts = list(range(0, num_frames - window_length + 1, stride))
    if starts[-1] + window_length < num_frames:
        starts.append(num_frames - window_length)
    return [(start, start + window_length) for start in starts]


def window_blend_weights(windows: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Per-frame weights of each window: linear ramps across the frames it shares with its neighbours.

    Ramps never reach zero, so every frame has positive total weight; the sampler divides by the total.
    """
    weights = []
    for index, (start, end) in enumerate(windows):
        length = end - start
        left = windows[index - 1][1] - start if index > 0 else 0
        right = end - windows[index + 1][0] if index + 1 < len(windows) else 0
        position = torch.arange(length, dtype=torch.float32)
        ramp_in = ((position + 1) / (left + 1)).clamp(max=1.0)
        ramp_out = ((length - position) / (right + 1)).clamp(max=1.0)
        weights.append(ramp_in * ramp_out)
    return weights


# ----------------------------------------------------------------------------------------------------
# Guidance


@dataclass
class GuidanceBranch:
    """One batched model call of guidance and its weight in the combined estimate."""

    coefficient: float
    use_reference: bool
    use_audio: bool
    use_motion: bool = True  # the mouth motion, where one is given


def guidance_branches(reference_guidance_scale: float, audio_guidance_scale: float,
                      motion_guidance_scale: float = 1.0) -> list[GuidanceBranch]:
    """``out = uncond + s_ref (ref - uncond) + s_audio (ref_audio - ref) + (s_motion - 1) (ref_audio - ref_audio
    without the motion)`` as an affine sum of branches; every other branch has the motion, like the canvas.

    Branches with a zero coefficient are skipped (s_ref = s_audio = s_motion = 1 runs only ref+audio).
    """
    s_ref, s_audio = float(reference_guidance_scale), float(audio_guidance_scale)
    s_motion = float(motion_guidance_scale)
    candidates = [
        GuidanceBranch(1.0 - s_ref, use_reference=False, use_audio=False),
        GuidanceBranch(s_ref - s_audio, use_reference=True, use_audio=False),
        GuidanceBranch(s_audio + s_motion - 1.0, use_reference=True, use_audio=True),
        GuidanceBranch(1.0 - s_motion, use_reference=True, use_audio=True, use_motion=False),
    ]
    return [branch for branch in candidates if branch.coefficient != 0.0]


# The one branch outside the guidance interval: the fully conditioned prediction (guidance scale 1).
CONDITIONED_BRANCH = GuidanceBranch(1.0, use_reference=True, use_audio=True)


def prepare_unet(unet, device: torch.device, plan: SamplingPlan) -> None:
    """The plan's settings of the UNet's computation, applied in place (layout and compilation once).

    Attention is already PyTorch's SDPA everywhere (diffusers' ``AttnProcessor2_0``, the default).
    Channels-last applies to the 2-D convolutions only: the temporal VAE's and UNet's 5-D weights have no
    such layout (converting the whole UNet raises on CUDA).
    """
    unet.ff_chunks = plan.ff_chunks
    if plan.channels_last and device.type == "cuda":
        for module in unet.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.to(memory_format=torch.channels_last)
    if plan.compile and getattr(unet, "_compiled_call_impl", None) is None:
        if device.type == "cuda" and not has_triton():
            logger.warning("torch.compile needs Triton, which is not installed: the UNet runs uncompiled")
            return
        unet.compile()


def _without_compile(unet, error: Exception) -> None:
    """Back to the uncompiled UNet after ``torch.compile`` failed to build it (one message, then eager)."""
    logger.warning("torch.compile failed (%s: %s); the UNet runs uncompiled", type(error).__name__,
                   str(error).splitlines()[0] if str(error) else "")
    unet._compiled_call_impl = None


# ----------------------------------------------------------------------------------------------------


class SayAnythingPipeline:
    """Lip sync of aligned face crops.

    ``SayAnythingPipeline(model, vae)`` with a diffusers ``AutoencoderKLTemporalDecoder``; the latent
    scale factor and ``scaling_factor`` are read from the VAE's config. ``scheduler`` (optional) is a
    diffusers ``EulerDiscreteScheduler`` whose Karras sigmas we sample with; SVD's by default.
    """

    def __init__(self, model: SayAnythingModel, vae, scheduler=None):
        self.model = model
        self.vae = vae
        self.scheduler = scheduler if scheduler is not None else default_scheduler()
        factor = vae_scale_factor(vae)
        if factor != model.config.id_guider.latent_scale_factor:
            raise ValueError(
                f"the VAE downsamples {factor}x but the model was built for "
                f"{model.config.id_guider.latent_scale_factor}x "
                "latents; use the VAE the model was trained with"
            )
        if vae.config.latent_channels != model.config.unet.out_channels:
            raise ValueError(
                f"the VAE has {vae.config.latent_channels} latent channels but the model predicts "
                f"{model.config.unet.out_channels}; use the VAE the model was trained with"
            )
        self.vae_scale_factor = factor

    def sigmas(self, num_inference_steps: int, schedule: str = "karras") -> torch.Tensor:
        """Noise levels of the sampling steps, ending with 0 (``num_inference_steps + 1`` values).

        ``karras``: the scheduler's (SVD's) Karras sigmas; ``few_step``: ``few_step_sigmas``.
        """
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        if schedule == "few_step":
            return few_step_sigmas(num_inference_steps, self.scheduler.config.sigma_max)
        if schedule != "karras":
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.scheduler.set_timesteps(num_inference_steps, device="cpu")
        return self.scheduler.sigmas.to(torch.float32).cpu()

    @torch.no_grad()
    def __call__(
        self,
        frames: torch.Tensor,
        mask: torch.Tensor,
        audio_features: torch.Tensor,
        reference: torch.Tensor | None = None,
        id_features: Sequence[torch.Tensor] | None = None,
        plan: SamplingPlan | None = None,
        *,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
        window_callback: WindowCallback | None = None,
        device: torch.device | str | None = None,
        motion: torch.Tensor | None = None,
        preview_callback: PreviewCallback | None = None,
        style: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Regenerate the masked region of ``frames`` to match ``audio_features``.

        Args:
            frames: ``[T, 3, S, S]`` aligned face crops in -1..1.
            mask: ``[T, 1, S, S]`` (or ``[T, S, S]``) in 0..1, 1 = regenerate.
            audio_features: ``[T, L, W, D]`` Whisper features, one window per frame.
            reference: ``[1, 3, S, S]`` (or ``[3, S, S]``) identity reference in -1..1, or give
                ``id_features`` from ``model.encode_reference`` (computed once, reused).
            plan: every setting of the run (``SamplingPlan``; default: ``SamplingPlan()``).
            generator: the noise is drawn on the CPU from it (default: one seeded with ``plan.seed``), frame
                by frame in a fixed order, so the result does not depend on the window settings' order of work.
            callback: ``callback(step, total, latents)`` after every step (the whole video's latents
                after it); raise to cancel.
            window_callback: ``window_callback(done, total)`` after every window of every step
                (``total = steps * windows``): finer progress for long videos; raise to cancel.
            device: where the model runs (default: the model's device). Latents of frames outside the
                current window stay on the CPU.
            motion: ``[T, motion_channels, h, w]`` rendered mouth motion (``motion.render_motion``) for a
                model with a motion input; given to every guidance branch, like the canvas.
            preview_callback: ``preview_callback(start, x0)`` with each window's clean-latent estimate
                ``[F, 4, h, w]`` (scaled latents, CPU) as it is computed, for a sampling preview.
            style: ``[1, R, hidden]`` speaking-style reference (``model.encode_style``) for a model with a
                style encoder; it goes with the audio, so the guidance branches without audio have none.

        Returns ``[T, 3, S, S]`` float32 on the CPU in -1..1, equal to ``frames`` wherever ``mask`` is 0.
        The steps are also public for videos that do not fit in memory (``lipsync_core.dubbing``):
        ``prepare_latents`` -> ``encode_canvas`` per chunk -> ``denoise`` -> ``decode`` per chunk.
        """
        model = self.model
        plan = plan or SamplingPlan()
        device = torch.device(device) if device is not None else model.device

        # 1. Check inputs
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be [T, 3, S, S] in -1..1, got {list(frames.shape)}")
        num_frames, _, height, width = frames.shape
        if mask.ndim == 3:
            mask = mask[:, None]
        if mask.shape != (num_frames, 1, height, width):
            raise ValueError(f"mask must be [T, 1, H, W] = {[num_frames, 1, height, width]}, got {list(mask.shape)}")
        if (reference is None) == (id_features is None):
            raise ValueError("give exactly one of reference (an image) or id_features (from model.encode_reference)")
        if generator is None:
            generator = torch.Generator().manual_seed(plan.seed)

        # 2. Noise for the whole video, then the canvas chunk by chunk (its noise follows): fixed order for a seed.
        video = self.prepare_latents(num_frames, (height, width), plan, generator)
        for start in range(0, num_frames, plan.decode_chunk):
            end = min(start + plan.decode_chunk, num_frames)
            self.encode_canvas(video, start, frames[start:end], mask[start:end], plan, generator, device)

        # 3. Reference
        if id_features is None:
            if reference.ndim == 3:
                reference = reference[None]
            id_features = model.encode_reference(reference.to(device, model.dtype))

        # 4. Denoising loop
        self.denoise(video, audio_features, id_features, plan, callback=callback, window_callback=window_callback,
                     device=device, motion=motion, preview_callback=preview_callback, style=style)

        # 5. Decode and composite: pixels outside the mask are the input's, exactly.
        out = torch.empty(frames.shape, dtype=torch.float32)
        for start, generated in self.decode(video, plan, device):
            end = start + generated.shape[0]
            out[start:end] = composite(generated, frames[start:end], mask[start:end])
        return out

    # ------------------------------------------------------------------------------------------------
    # The steps of a call, for videos held chunk by chunk

    def prepare_latents(
        self,
        num_frames: int,
        size: tuple[int, int],
        plan: SamplingPlan,
        generator: torch.Generator,
        buffer: Callable[..., torch.Tensor] = torch.zeros,
    ) -> VideoLatents:
        """Start noise ``[T, 4, h, w]`` at the plan's first sigma, drawn frame by frame, and empty canvas buffers.

        ``buffer(shape, dtype=...)`` allocates the O(T) arrays (``lipsync_core.streaming.frame_buffer``
        spills them to a file); everything else a call holds is one window or one chunk.
        """
        height, width = size
        if num_frames < 1:
            raise ValueError("the video has no frames")
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(
                f"frame size {height}x{width} must be a multiple of the VAE factor {self.vae_scale_factor}"
            )
        channels = self.vae.config.latent_channels
        latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        sigma_max = self.sigmas(plan.steps, plan.schedule)[0]
        latents = buffer((num_frames, channels, *latent_size), dtype=torch.float32)
        for index in range(num_frames):
            latents[index] = (
                torch.randn((channels, *latent_size), generator=generator, dtype=torch.float32) * sigma_max
            )
        return VideoLatents(
            latents=latents,
            masked_latents=buffer((num_frames, channels, *latent_size), dtype=torch.float32),
            latent_mask=buffer((num_frames, 1, *latent_size), dtype=torch.float32),
            buffer=buffer,
        )

    def encode_canvas(
        self,
        video: VideoLatents,
        start: int,
        frames: torch.Tensor,
        mask: torch.Tensor,
        plan: SamplingPlan,
        generator: torch.Generator,
        device: torch.device | str | None = None,
    ) -> None:
        """The editing canvas of frames ``[start, start + len(frames))``: ``frames [F, 3, S, S]`` in -1..1,
        ``mask [F, 1, S, S]`` (see ``build_masked_video_conditioning``; noise ``plan.noise_aug_strength``)."""
        end = start + frames.shape[0]
        if not 0 <= start < end <= video.num_frames:
            raise ValueError(f"frames {start}..{end} are outside the video's {video.num_frames} frames")
        masked, latent_mask = build_masked_video_conditioning(
            self.vae, frames, mask, plan.noise_aug_strength, generator, chunk_size=frames.shape[0], device=device
        )
        if masked.shape[1:] != video.masked_latents.shape[1:]:
            raise ValueError(f"crops of {list(frames.shape[-2:])} pixels do not match the prepared latents")
        video.masked_latents[start:end] = masked
        video.latent_mask[start:end] = latent_mask

    @torch.no_grad()
    def denoise(
        self,
        video: VideoLatents,
        audio_features: torch.Tensor,
        id_features: Sequence[torch.Tensor],
        plan: SamplingPlan | None = None,
        *,
        callback: StepCallback | None = None,
        window_callback: WindowCallback | None = None,
        device: torch.device | str | None = None,
        motion: torch.Tensor | None = None,
        preview_callback: PreviewCallback | None = None,
        style: torch.Tensor | None = None,
    ) -> None:
        """Run the sampler on ``video.latents`` in place: every window denoised at every step, blended
        into one estimate per frame, one Euler step. Frames are stepped as soon as no later window
        covers them, so besides the latents only one window's blend is held (``plan.window_batch``
        windows' with batching). ``motion`` ``[T, C, h, w]``: the rendered mouth motion for a model with
        a motion input; the rest as in ``__call__``."""
        model = self.model
        plan = plan or SamplingPlan()
        device = torch.device(device) if device is not None else model.device
        prepare_unet(model.unet, device, plan)
        num_frames = video.num_frames
        if audio_features.ndim != 4 or audio_features.shape[0] != num_frames:
            raise ValueError(
                f"audio_features must be [T, layers, window, dim] with T = {num_frames} frames, "
                f"got {list(audio_features.shape)}; fit the audio to the video first"
            )
        if motion is not None and (motion.ndim != 4 or motion.shape[0] != num_frames
                                   or motion.shape[2:] != video.latent_mask.shape[2:]):
            raise ValueError(
                f"motion must be [T, channels, h, w] with T = {num_frames} frames at the latent size "
                f"{list(video.latent_mask.shape[2:])}, got {list(motion.shape)}; fit the mouth motion to the video"
            )
        windows = plan_windows(num_frames, plan.window, plan.overlap)
        blend = window_blend_weights(windows)
        size = plan.window_batch
        groups = [list(range(i, min(i + size, len(windows)))) for i in range(0, len(windows), size)]
        sigmas = self.sigmas(plan.steps, plan.schedule)
        id_features = [feature.to(device, model.dtype) for feature in id_features]
        branches = guidance_branches(plan.reference_guidance, plan.audio_guidance,
                                     1.0 if motion is None else plan.motion_guidance)
        guided = _BranchBatch(branches, id_features, model.zero_id_features(id_features), device)
        conditioned = _BranchBatch([CONDITIONED_BRANCH], id_features, model.zero_id_features(id_features), device)
        added_time_ids = make_added_time_ids(plan.fps, plan.motion_bucket_id, plan.noise_aug_strength, 1, device)
        # Deep features per window, for the current guidance batch: never shared between windows or videos,
        # dropped when the batch changes (they would not fit the new one). They wait between steps in a
        # ``video.buffer`` array (spilled to disk with the latents when long), so memory holds one group's.
        deep = _DeepFeatureStore(video.buffer, len(windows)) if plan.deep_cache > 1 else None
        refreshed: dict[int, int] = {}
        latents = video.latents

        total = len(sigmas) - 1
        window_calls = 0
        batch = None
        for step in range(total):
            ratio = sigmas[step + 1] / sigmas[step]
            step_batch = guided if plan.guides_at(float(sigmas[step])) else conditioned
            if step_batch is not batch:
                batch = step_batch
                refreshed.clear()
                if deep is not None:
                    deep.clear()
            pending_start = 0  # frames [pending_start, pending_start + len(pending)) await later windows
            pending = torch.zeros(0, *latents.shape[1:])
            pending_weight = torch.zeros(0, 1, 1, 1)
            for group_index, group in enumerate(groups):
                cache = None
                if deep is not None:
                    fresh = group_index in refreshed and step - refreshed[group_index] < plan.deep_cache
                    cache = deep.cache(group_index, group, len(batch.branches), device, reuse=fresh)
                    if not cache.reuse:
                        refreshed[group_index] = step
                spans = [windows[index] for index in group]
                denoised = self._guided_denoise(
                    torch.stack([latents[start:end] for start, end in spans]).to(device),
                    sigmas[step],
                    torch.stack([video.masked_latents[start:end] for start, end in spans]).to(device),
                    torch.stack([video.latent_mask[start:end] for start, end in spans]).to(device),
                    torch.stack([audio_features[start:end] for start, end in spans]).to(device, torch.float32),
                    batch,
                    added_time_ids,
                    plan,
                    None if motion is None else torch.stack([motion[start:end] for start, end in spans]).to(
                        device, torch.float32),
                    cache,
                    style,
                ).cpu()
                if cache is not None:  # only the group in hand holds features in memory
                    if cache.reuse:
                        cache.features = None
                    else:
                        deep.keep(group, len(batch.branches), cache)
                for index, window_denoised in zip(group, denoised):
                    start, end = windows[index]
                    if preview_callback is not None:
                        preview_callback(start, window_denoised)
                    grow = end - pending_start - pending.shape[0]
                    if grow > 0:
                        pending = torch.cat([pending, pending.new_zeros(grow, *pending.shape[1:])])
                        pending_weight = torch.cat([pending_weight, pending_weight.new_zeros(grow, 1, 1, 1)])
                    weight = blend[index].reshape(-1, 1, 1, 1)
                    pending[start - pending_start : end - pending_start] += weight * window_denoised
                    pending_weight[start - pending_start : end - pending_start] += weight
                    window_calls += 1
                    if window_callback is not None:
                        window_callback(window_calls, total * len(windows))
                    # Euler step of the probability-flow ODE for the frames no later window covers:
                    # x moves along (x - D(x)) / sigma.
                    done_until = windows[index + 1][0] if index + 1 < len(windows) else num_frames
                    if done_until > pending_start:
                        count = done_until - pending_start
                        estimate = pending[:count] / pending_weight[:count]
                        current = latents[pending_start:done_until]
                        latents[pending_start:done_until] = estimate + (current - estimate) * ratio
                        pending, pending_weight = pending[count:], pending_weight[count:]
                        pending_start = done_until
            if callback is not None:
                callback(step + 1, total, latents)

    def decode(
        self,
        video: VideoLatents,
        plan: SamplingPlan | None = None,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, frames [F, 3, S, S])`` chunk by chunk (float32, CPU, -1..1) from the final latents,
        ``plan.decode_chunk`` frames at a time; under bfloat16 autocast on CUDA when ``plan.bf16_decode``."""
        plan = plan or SamplingPlan()
        device = torch.device(device) if device is not None else self.vae.device
        bf16 = plan.bf16_decode and native_bf16(device)
        chunk, start = plan.decode_chunk, 0
        while start < video.num_frames:
            stop = min(start + chunk, video.num_frames)
            try:
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                    frames = decode_span(self.vae, video.latents, start, stop, plan.decode_context, device)
            except torch.OutOfMemoryError as error:
                # The sampled latents are kept: decode the rest in smaller chunks instead of losing the run.
                if chunk == 1:
                    raise torch.OutOfMemoryError(
                        f"the VAE ran out of device memory decoding even one frame ({error}); free memory on the "
                        "device (close other programs or models), or use a smaller crop size"
                    ) from error
                chunk = max(1, chunk // 2)
                logger.warning("VAE decode ran out of device memory; decoding %d frames at a time", chunk)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            yield start, frames
            start = stop

    def _guided_denoise(
        self,
        latents: torch.Tensor,
        sigma: torch.Tensor,
        masked_latents: torch.Tensor,
        latent_mask: torch.Tensor,
        audio_features: torch.Tensor,
        batch: _BranchBatch,
        added_time_ids: torch.Tensor,
        plan: SamplingPlan,
        motion: torch.Tensor | None = None,
        deep_cache: DeepFeatureCache | None = None,
        style: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """All guidance branches of ``G`` windows ``[G, F, 4, h, w]`` in one batch (branch-major), combined:
        ``[G, F, 4, h, w]``."""
        count, windows = len(batch.branches), latents.shape[0]

        def per_branch(value: torch.Tensor) -> torch.Tensor:
            return value[None].expand(count, *value.shape).flatten(0, 1)

        zero_audio = torch.zeros_like(audio_features)
        audio = torch.stack([audio_features if b.use_audio else zero_audio for b in batch.branches])
        cond = Conditioning(
            masked_latents=per_branch(masked_latents),
            mask=per_branch(latent_mask),
            audio_features=audio.flatten(0, 1),
            id_features=[ids.repeat_interleave(windows, dim=0) for ids in batch.id_features],
            added_time_ids=added_time_ids.expand(count * windows, 3),
            motion=None if motion is None else torch.stack(
                [motion if b.use_motion else torch.zeros_like(motion) for b in batch.branches]).flatten(0, 1),
        )
        if style is not None:
            cond.style = style.to(latents.device)
            scales = torch.tensor([plan.style_strength if b.use_audio else 0.0 for b in batch.branches])
            cond.style_scale = scales.repeat_interleave(windows).to(latents.device)
        extra = {} if deep_cache is None else {"deep_cache": deep_cache}  # the plain call when nothing is cached
        try:
            denoised = self.model.denoise(per_branch(latents), float(sigma), cond, **extra)
        except Exception as error:  # torch.compile fails at its first call (no compiler, no Triton, ...)
            if getattr(self.model.unet, "_compiled_call_impl", None) is None:
                raise
            _without_compile(self.model.unet, error)
            denoised = self.model.denoise(per_branch(latents), float(sigma), cond, **extra)
        return (batch.coefficients * denoised.unflatten(0, (count, windows))).sum(0)


class _BranchBatch:
    """The guidance branches of one model call with their ID features (``[branches, C, h, w]`` per
    resolution) and coefficients, built once per video."""

    def __init__(self, branches: list[GuidanceBranch], id_features, zero_ids, device: torch.device):
        self.branches = branches
        self.id_features = [
            torch.cat([(ids if branch.use_reference else zeros) for branch in branches])
            for ids, zeros in zip(id_features, zero_ids)
        ]
        self.coefficients = torch.tensor([b.coefficient for b in branches], device=device).reshape(-1, 1, 1, 1, 1, 1)


class _DeepFeatureStore:
    """Every window's deep features between two refreshes (DeepCache), ``[windows, branches, F, C, h, w]`` in one
    ``buffer`` array allocated at the first store, so that only the window group in hand is in memory; one
    ``DeepFeatureCache`` per window group hands them to the UNet."""

    def __init__(self, buffer: Callable[..., torch.Tensor], num_windows: int):
        self.buffer, self.num_windows = buffer, num_windows
        self.features: torch.Tensor | None = None
        self.caches: dict[int, DeepFeatureCache] = {}

    def clear(self) -> None:
        self.features = None
        self.caches.clear()

    def cache(self, index: int, group: list[int], branches: int, device: torch.device,
              reuse: bool) -> DeepFeatureCache:
        """Group ``index``'s cache: to store a full forward's features, or (``reuse``) holding them on ``device``."""
        cache = self.caches.setdefault(index, DeepFeatureCache())
        cache.reuse = reuse and self.features is not None
        if cache.reuse:
            stored = torch.stack([self.features[window] for window in group], dim=1)  # [branches, G, F, C, h, w]
            if stored.shape[0] != branches:
                raise ValueError("deep features are reused by another guidance batch than the one that stored them")
            cache.features = stored.flatten(0, 2).to(device)
        return cache

    def keep(self, group: list[int], branches: int, cache: DeepFeatureCache) -> None:
        """Move a full forward's features from ``cache`` into the store (the cache then holds none)."""
        stored = cache.features.detach().float().cpu()
        per_window = stored.reshape(branches, len(group), -1, *stored.shape[1:]).transpose(0, 1)
        if self.features is None:
            self.features = self.buffer((self.num_windows, *per_window.shape[1:]), dtype=torch.float32)
        for window, features in zip(group, per_window):
            self.features[window] = features
        cache.features = None
