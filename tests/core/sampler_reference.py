"""The sampler as it was before fast sampling, kept verbatim as the reference that the
``quality`` speed preset must reproduce bit for bit. Do not edit: change the sampler, not this."""

from __future__ import annotations

import torch

from lipsync_core.models import Conditioning, make_added_time_ids
from lipsync_core.pipeline import guidance_branches, plan_windows, window_blend_weights


@torch.no_grad()
def reference_denoise(pipe, video, audio_features, id_features, num_inference_steps, reference_guidance_scale,
                      audio_guidance_scale, window_length, window_overlap, fps, motion_bucket_id,
                      noise_aug_strength, device="cpu"):
    model = pipe.model
    device = torch.device(device)
    num_frames = video.num_frames
    windows = plan_windows(num_frames, window_length, window_overlap)
    blend = window_blend_weights(windows)
    branches = guidance_branches(reference_guidance_scale, audio_guidance_scale)
    pipe.scheduler.set_timesteps(num_inference_steps, device="cpu")
    sigmas = pipe.scheduler.sigmas.to(torch.float32).cpu()
    id_features = [feature.to(device, model.dtype) for feature in id_features]
    zero_ids = model.zero_id_features(id_features)
    added_time_ids = make_added_time_ids(fps, motion_bucket_id, noise_aug_strength, len(branches), device)
    branch_ids = [
        torch.cat([(ids if branch.use_reference else zeros) for branch in branches])
        for ids, zeros in zip(id_features, zero_ids)
    ]
    coefficients = torch.tensor([b.coefficient for b in branches], device=device).reshape(-1, 1, 1, 1, 1)
    latents = video.latents

    total = len(sigmas) - 1
    for step in range(total):
        ratio = sigmas[step + 1] / sigmas[step]
        pending_start = 0
        pending = torch.zeros(0, *latents.shape[1:])
        pending_weight = torch.zeros(0, 1, 1, 1)
        for index, ((start, end), weight) in enumerate(zip(windows, blend)):
            window_latents = latents[start:end].to(device)
            masked_latents = video.masked_latents[start:end].to(device)
            latent_mask = video.latent_mask[start:end].to(device)
            audio = audio_features[start:end].to(device, torch.float32)
            count = len(branches)
            zero_audio = torch.zeros_like(audio)
            cond = Conditioning(
                masked_latents=masked_latents[None].expand(count, *masked_latents.shape),
                mask=latent_mask[None].expand(count, *latent_mask.shape),
                audio_features=torch.stack([audio if b.use_audio else zero_audio for b in branches]),
                id_features=branch_ids,
                added_time_ids=added_time_ids,
            )
            noisy = window_latents[None].expand(count, *window_latents.shape)
            denoised = (coefficients * model.denoise(noisy, float(sigmas[step]), cond)).sum(0).cpu()
            grow = end - pending_start - pending.shape[0]
            if grow > 0:
                pending = torch.cat([pending, pending.new_zeros(grow, *pending.shape[1:])])
                pending_weight = torch.cat([pending_weight, pending_weight.new_zeros(grow, 1, 1, 1)])
            weight = weight.reshape(-1, 1, 1, 1)
            pending[start - pending_start : end - pending_start] += weight * denoised
            pending_weight[start - pending_start : end - pending_start] += weight
            done_until = windows[index + 1][0] if index + 1 < len(windows) else num_frames
            if done_until > pending_start:
                count = done_until - pending_start
                estimate = pending[:count] / pending_weight[:count]
                current = latents[pending_start:done_until]
                latents[pending_start:done_until] = estimate + (current - estimate) * ratio
                pending, pending_weight = pending[count:], pending_weight[count:]
                pending_start = done_until
