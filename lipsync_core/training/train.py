"""The SayAnything training loop on accelerate (one GPU, several GPUs, several machines, or CPU processes).

Objective (SVD's EDM, ours where marked): clean latents ``x0`` of a window, ``sigma`` log-normal
(``p_mean``, ``p_std``), ``noisy = x0 + sigma * eps``, the model's denoiser
``SayAnythingModel.denoise`` (the same call the sampler uses) predicts ``x0``; the loss is the EDM
weighted squared error ``(sigma^2 + 1) / sigma^2 * |D - x0|^2`` averaged over the latent cells of the
editing mask (ours: outside the mask the canvas already holds the answer). Condition dropout (ours)
replaces the audio by zero features and/or the ID residuals by zeros -- the very null conditions the
sampler's guidance branches use -- and drops the mouth motion and the speaking style (which goes with
the audio, as in the sampler) for models that have them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import load_checkpoint, save_checkpoint
from ..configs import PRESETS, ModelDefaults, SayAnythingConfig
from ..models import Conditioning, SayAnythingModel, make_added_time_ids
from ..pipeline import SayAnythingPipeline, build_masked_video_conditioning, downsample_mask, encode_latents
from ..plan import SamplingPlan
from .config import TrainConfig
from .dataset import LipSyncWindows


def model_config_from(name: str) -> SayAnythingConfig:
    if os.path.isfile(name):
        return SayAnythingConfig.from_json(Path(name).read_text())
    return SayAnythingConfig.preset(name)


def build_model_and_vae(config: TrainConfig, seed: int) -> tuple[SayAnythingModel, object | None]:
    """The starting model (random, a SayAnything checkpoint, or SVD) and the VAE (or None)."""
    vae = None
    if config.init is None:
        torch.manual_seed(seed)
        model = SayAnythingModel(model_config_from(config.model))
    else:
        from safetensors import safe_open

        with safe_open(config.init, "pt") as handle:
            is_sayanything = (handle.metadata() or {}).get("format") == "sayanything"
        if is_sayanything:
            model, vae = load_checkpoint(config.init, dtype=torch.float32)
        else:
            from ..svd_import import model_from_svd

            model, vae = model_from_svd(config.init, seed=seed)
    if config.vae is not None:
        vae = load_vae(config.vae)
    return model.train(), vae


def load_vae(path: str | os.PathLike):
    """The VAE of a SayAnything checkpoint saved with one, or of a single-file SVD checkpoint."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") == "sayanything":
        _, vae = load_checkpoint(path, dtype=torch.float32)
        if vae is None:
            raise ValueError(f"{path} holds no VAE; give a checkpoint saved with its VAE or an SVD file")
        return vae
    from ..svd_import import load_svd_vae

    return load_svd_vae(path)


# The mask settings prep (and the toy world) record per clip, as ModelDefaults names them.
MASK_SETTINGS = ("upper_edge", "mask_expand", "mask_feather", "mask_hold")


def trained_defaults(config: TrainConfig, model: SayAnythingModel, dataset: LipSyncWindows) -> ModelDefaults:
    """The ``defaults`` the model files carry: what this run trained with, so inference matches it.

    Starts from the model's own defaults (a fine-tuned checkpoint's) or the preset's, then the data's
    crop size and mask settings, the window, canvas noise, fps and motion bucket of this run, then
    ``config.inference_defaults``.
    """
    base = getattr(model, "defaults", None) or (
        ModelDefaults.for_preset(config.model) if config.model in PRESETS else ModelDefaults())
    crop_size = int(dataset[0]["frames"].shape[-1])
    window = dataset.num_frames
    # A mask setting the clips disagree on (the toy world varies the expand) keeps the base's value: the
    # first clip's would be an accident of the data's order.
    values = {name: {info.get(name) for _, _, _, info in dataset.index.entries} for name in MASK_SETTINGS}
    mask = {name: next(iter(found)) for name, found in values.items() if len(found) == 1}
    return base.replace(
        crop_size=crop_size, window=window, overlap=window // 4, noise_aug_strength=config.noise_aug_strength,
        fps=config.fps, motion_bucket_id=config.motion_bucket_id, **mask,
    ).replace(**config.inference_defaults)


def select_trainable(model: SayAnythingModel, trainable: str) -> list[nn.Parameter]:
    """Set requires_grad per the chosen parts and return the trainable parameters."""
    new_prefixes = ("audio_projection.", "id_guider.", "unet.conv_in.", "style_encoder.")
    for name, parameter in model.named_parameters():
        if trainable == "all":
            keep = True
        elif trainable == "style":
            keep = name.startswith("style_encoder.")
        elif trainable == "new":
            keep = name.startswith(new_prefixes)
        else:  # attention layers (spatial and temporal transformers) plus the new modules
            keep = name.startswith(new_prefixes) or ".attentions." in name
        parameter.requires_grad_(keep)
    return [p for p in model.parameters() if p.requires_grad]


class DiffusionLoss(nn.Module):
    """The whole training objective in one forward, so distributed wrappers see one call per step."""

    def __init__(self, model: SayAnythingModel, config: TrainConfig):
        super().__init__()
        self.model = model
        self.config = config

    def forward(self, latents: torch.Tensor, masked_latents: torch.Tensor, latent_mask: torch.Tensor,
                audio: torch.Tensor, reference: torch.Tensor, draws: dict[str, torch.Tensor],
                motion: torch.Tensor | None = None, style: tuple | None = None,
                mouth: torch.Tensor | None = None) -> torch.Tensor:
        config, model = self.config, self.model
        batch_size = latents.shape[0]
        sigma = draws["sigma"]
        noisy = latents + sigma.reshape(-1, 1, 1, 1, 1) * draws["noise"]
        keep_audio = draws["keep_audio"].to(audio.dtype).reshape(-1, 1, 1, 1, 1)
        keep_reference = draws["keep_reference"]
        id_features = [feature * keep_reference.to(feature.dtype).reshape(-1, 1, 1, 1)
                       for feature in model.encode_reference(reference)]
        cond = Conditioning(
            masked_latents=masked_latents,
            mask=latent_mask,
            audio_features=audio * keep_audio,
            id_features=id_features,
            added_time_ids=make_added_time_ids(config.fps, config.motion_bucket_id, config.noise_aug_strength,
                                               batch_size, latents.device),
            motion=None if motion is None else motion * draws["keep_motion"].to(motion.dtype).reshape(-1, 1, 1, 1, 1),
        )
        auxiliary = 0.0
        if style is not None:
            frames, features, lips, targets = style
            cond.style = model.encode_style(frames, features, lips if model.config.style.lip_motion else None)
            cond.style_scale = (draws["keep_style"] & draws["keep_audio"]).float()
            if config.style_motion_weight > 0:
                predicted = model.style_encoder.predict_mouth(audio.to(model.dtype), cond.style)
                known = torch.isfinite(targets).flatten(2).all(-1) & draws["has_style"][:, None]
                if known.any():
                    auxiliary = config.style_motion_weight * (predicted[known].float() - targets[known]).pow(2).mean()
        denoised = model.denoise(noisy, sigma, cond)
        weight = ((sigma**2 + 1.0) / sigma**2).reshape(-1, 1, 1, 1, 1)
        error = weight * (denoised.float() - latents.float()) ** 2 * latent_mask
        if mouth is not None:
            error = error * (1.0 + config.mouth_loss_weight * mouth)
        cells = latent_mask.sum(dim=(1, 2, 3, 4)).clamp(min=1.0) * latents.shape[2]
        return (error.sum(dim=(1, 2, 3, 4)) / cells).mean() + auxiliary


class EMA:
    """Exponential moving average of the trainable parameters (fp32), checkpointed with the run."""

    def __init__(self, parameters: list[nn.Parameter], decay: float):
        self.decay = decay
        self.shadow = [p.detach().float().clone() for p in parameters]

    @torch.no_grad()
    def update(self, parameters: list[nn.Parameter]) -> None:
        for shadow, parameter in zip(self.shadow, parameters):
            shadow.lerp_(parameter.detach().float(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, parameters: list[nn.Parameter]) -> None:
        for shadow, parameter in zip(self.shadow, parameters):
            parameter.copy_(shadow.to(parameter.dtype))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.shadow = [s.clone() for s in state["shadow"]]


class RunState:
    """Step counter and this process' random generator; saved and restored for an exact resume."""

    def __init__(self, seed: int, process_index: int):
        self.step = 0
        self.generator = torch.Generator().manual_seed(seed * 1000 + process_index)

    def state_dict(self) -> dict:
        return {"step": self.step, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.generator.set_state(state["generator"])


class EpochSampler(torch.utils.data.Sampler):
    """A shuffle that depends only on (seed, epoch): a resumed run replays the same order."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())


def lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        warmup = min(1.0, (step + 1) / max(config.lr_warmup_steps, 1))
        progress = min(step / max(config.max_steps, 1), 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return warmup * (config.lr_min_ratio + (1.0 - config.lr_min_ratio) * cosine)

    return factor


def make_optimizer(parameters: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw8bit":
        try:
            import bitsandbytes
        except ImportError as error:
            raise ValueError("optimizer adamw8bit needs bitsandbytes (pip install bitsandbytes, CUDA only)") from error
        return bitsandbytes.optim.AdamW8bit(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)


def _latest_state(output: Path) -> Path | None:
    states = sorted(output.glob("state-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [s for s in states if (s / "complete").is_file()]
    return complete[-1] if complete else None


def train(config: TrainConfig, model: SayAnythingModel | None = None, vae=None,
          progress: Callable[[int, int, float], None] | None = None) -> Path:
    """Run (or resume) training; returns the path of the final model file ``<output>/model.safetensors``.

    ``model`` / ``vae`` may be passed in directly (the toy world does); otherwise they are built from
    ``config``. A run resumes from the newest complete ``state-<step>`` folder in ``config.output``.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    # Accelerate keeps one process-wide state and refuses a second Accelerator with another precision;
    # a second train() in the same process (the toy run, a notebook) must start from a clean state.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
    )
    output = Path(config.output)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        (output / "train_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    set_seed(config.seed)

    if model is None:
        model, built_vae = build_model_and_vae(config, config.seed)
        vae = vae if vae is not None else built_vae
    model.train()
    num_frames = config.num_frames or model.config.unet.num_frames
    if config.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    parameters = select_trainable(model, config.trainable)
    if not parameters:
        raise ValueError(f"trainable={config.trainable!r} selects no weights of this model (a model without a style "
                         "encoder has nothing for 'style')")

    motion_channels = model.config.unet.motion_channels
    dataset = LipSyncWindows(config.data, num_frames, use_latents=config.use_latents, seed=config.seed,
                             landmarks=motion_channels > 0 or model.config.style is not None
                             or config.mouth_loss_weight > 0,
                             style_frames=config.style_frames if model.config.style is not None else 0)
    if vae is None:
        raise ValueError("training needs a VAE (for the canvas and samples): give --vae or --init with one")
    vae.requires_grad_(False).eval()
    defaults = trained_defaults(config, model, dataset)
    if model.config.style is not None:
        defaults = defaults.replace(style_reference_frames=config.style_frames)
    sampler = EpochSampler(len(dataset), config.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True,
                                         num_workers=config.num_workers)
    optimizer = make_optimizer(parameters, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    objective = DiffusionLoss(model, config)
    objective, optimizer, loader, scheduler = accelerator.prepare(objective, optimizer, loader, scheduler)
    vae.to(accelerator.device)
    state = RunState(config.seed, accelerator.process_index)
    accelerator.register_for_checkpointing(state)
    ema = None
    if config.ema_decay > 0:
        ema = EMA(parameters, config.ema_decay)
        accelerator.register_for_checkpointing(ema)

    resume_from = _latest_state(output)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        accelerator.print(f"resumed from {resume_from} at step {state.step}")
    batches_per_epoch = len(loader)
    if batches_per_epoch == 0:
        raise ValueError(f"{config.data} has fewer windows ({len(dataset)}) than one batch per process")
    log_path = output / "log.jsonl"
    started = time.time()
    micro_step = state.step * config.gradient_accumulation_steps

    while state.step < config.max_steps:
        epoch, position = divmod(micro_step, batches_per_epoch)
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        epoch_loader = accelerator.skip_first_batches(loader, position) if position else loader
        for batch in epoch_loader:
            with accelerator.accumulate(objective):
                inputs = _prepare_batch(batch, vae, config, state.generator, accelerator.device, motion_channels)
                loss = objective(*inputs)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            micro_step += 1
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            if ema is not None:
                ema.update(parameters)
            mean_loss = accelerator.reduce(loss.detach(), reduction="mean").item()
            if progress is not None and accelerator.is_main_process:
                progress(state.step, config.max_steps, mean_loss)
            if accelerator.is_main_process and (state.step % config.log_every == 0 or state.step == 1):
                record = {"step": state.step, "loss": mean_loss, "lr": scheduler.get_last_lr()[0],
                          "epoch": epoch, "elapsed_s": round(time.time() - started, 2)}
                with open(log_path, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
            stopping = config.stop_at_step is not None and state.step >= config.stop_at_step
            if (config.checkpoint_every and state.step % config.checkpoint_every == 0) or stopping:
                _save_state(accelerator, output, state.step, config.keep_checkpoints)
                _save_model(accelerator, objective, ema, parameters, vae, config, defaults,
                            output / f"model-{state.step:07d}.safetensors")
            if stopping:
                accelerator.print(f"stopped at step {state.step}; run again to resume")
                accelerator.end_training()
                return output / f"model-{state.step:07d}.safetensors"
            if config.sample_every and state.step % config.sample_every == 0 and accelerator.is_main_process:
                _write_sample(accelerator.unwrap_model(objective).model, vae, dataset, config, output, state.step)
            if state.step >= config.max_steps:
                break
        else:
            continue
        break

    accelerator.wait_for_everyone()
    final = output / "model.safetensors"
    _save_model(accelerator, objective, ema, parameters, vae, config, defaults, final)
    accelerator.end_training()
    return final


def _prepare_batch(batch: dict, vae, config: TrainConfig, generator: torch.Generator, device,
                   motion_channels: int = 0) -> tuple:
    """Latents, canvas and the random draws of one step (drawn on the CPU from the run's generator);
    with a motion input also the mouth motion rendered from the window's own landmarks, and with a mouth loss
    weight the mouth's cells ``[B, T, 1, h, w]``."""
    frames, mask = batch["frames"], batch["mask"]
    batch_size = frames.shape[0]
    if "latents" in batch:
        latents, masked_latents = batch["latents"], batch["masked_latents"]
        latent_mask = downsample_mask(mask, tuple(latents.shape[-2:]))
    else:
        latents = encode_latents(vae, frames.to(device), device=device)
        masked_latents, latent_mask = build_masked_video_conditioning(
            vae, frames, mask, config.noise_aug_strength, generator, device=device)
    draws = {
        "sigma": (torch.randn(batch_size, generator=generator) * config.p_std + config.p_mean).exp(),
        "noise": torch.randn(latents.shape, generator=generator),
        "keep_audio": torch.rand(batch_size, generator=generator) >= config.audio_dropout,
        "keep_reference": torch.rand(batch_size, generator=generator) >= config.reference_dropout,
    }
    motion = style = mouth = None
    if motion_channels or config.mouth_loss_weight > 0:
        from ..motion import render_landmarks

        size, latent_size = frames.shape[-1], tuple(latents.shape[-2:])
        rendered = torch.stack([torch.from_numpy(render_landmarks(marks.numpy(), size, latent_size))
                                for marks in batch["landmarks"]]).to(device)
        if config.mouth_loss_weight > 0:  # the outer lips' hull, grown by a cell: a mouth opening wider is in it
            outer = rendered[:, :, 1].flatten(0, 1)[:, None]
            mouth = torch.nn.functional.max_pool2d(outer, 3, stride=1, padding=1).reshape(rendered[:, :, 1:].shape)
    if motion_channels:  # drawn after the others: runs without a motion input keep their random sequence
        draws["keep_motion"] = torch.rand(batch_size, generator=generator) >= config.motion_dropout
        motion = rendered
    if "style_frames" in batch:  # likewise for the style
        keep = torch.rand(batch_size, generator=generator) >= config.style_dropout
        draws["keep_style"] = keep & batch["has_style"]
        draws["has_style"] = batch["has_style"]
        lips = batch["style_lips"].to(device) if "style_lips" in batch else None
        style = (batch["style_frames"].to(device), batch["style_audio"].to(device), lips,
                 batch["mouth_target"].to(device))
    draws = {key: value.to(device) for key, value in draws.items()}
    tensors = (latents, masked_latents, latent_mask, batch["audio"], batch["reference"])
    return tuple(t.to(device) for t in tensors) + (draws, motion, style, mouth)


def _save_state(accelerator, output: Path, step: int, keep: int) -> None:
    folder = output / f"state-{step:07d}"
    accelerator.save_state(str(folder))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (folder / "complete").write_text(str(step))
        states = sorted(output.glob("state-*"), key=lambda p: int(p.name.split("-")[1]))
        for old in states[:-keep] if keep > 0 else []:
            import shutil

            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _save_model(accelerator, objective, ema: EMA | None, parameters, vae, config: TrainConfig,
                defaults: ModelDefaults, path: Path) -> None:
    """A checkpoint the nodes and `run` load as it is (EMA weights when EMA is on)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(objective).model
        if ema is not None:
            live = [p.detach().clone() for p in parameters]
            ema.copy_to(parameters)
        save_checkpoint(path, model, vae=vae if config.embed_vae else None, overwrite=True, defaults=defaults)
        if ema is not None:
            with torch.no_grad():
                for parameter, value in zip(parameters, live):
                    parameter.copy_(value)
    accelerator.wait_for_everyone()


@torch.no_grad()
def _write_sample(model: SayAnythingModel, vae, dataset: LipSyncWindows, config: TrainConfig, output: Path,
                  step: int) -> None:
    """Regenerate the first window of the data with the pipeline; write a PNG strip (source over result)."""
    import numpy as np

    was_training = model.training
    model.eval()
    item = dataset[0]
    plan = SamplingPlan(steps=config.sample_steps, window=dataset.num_frames, overlap=dataset.num_frames // 4,
                        noise_aug_strength=config.noise_aug_strength, fps=config.fps)
    result = SayAnythingPipeline(model, vae)(item["frames"], item["mask"], item["audio"], reference=item["reference"],
                                             plan=plan, device=model.device)
    model.train(was_training)
    rows = [torch.cat(list(video), dim=2) for video in (item["frames"], result)]
    strip = ((torch.cat(rows, dim=1).permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    samples = output / "samples"
    samples.mkdir(exist_ok=True)
    import cv2

    cv2.imwrite(str(samples / f"sample-{step:07d}.png"), np.ascontiguousarray(strip[..., ::-1]))
