"""The toy proof, end to end: world -> shards -> toy VAE -> training -> evaluation (ours).

Every stage uses the project's real pieces: Whisper features from ``audio.WhisperAudioEncoder``, the
shard format and dataset of ``training``, the training loop ``training.train``, the sampler
``SayAnythingPipeline`` and the checkpoint format; only the model config is small.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..configs import (
    AudioProjectionConfig,
    IDGuiderConfig,
    ModelDefaults,
    SayAnythingConfig,
    StyleEncoderConfig,
    UNetConfig,
)
from ..tensors import uint8_to_mask, uint8_to_model
from .world import ToyClip, WorldConfig, generate_world

Report = Callable[[str], None]


def toy_model_config(num_frames: int = 8, motion_channels: int = 2, style: bool = True) -> SayAnythingConfig:
    """The toy SayAnything: SVD's topology at 16x16 latents, with the mouth-motion input and the style
    encoder (ours)."""
    return SayAnythingConfig(
        unet=UNetConfig(
            block_out_channels=(32, 64),
            num_attention_heads=(2, 4),
            layers_per_block=1,
            cross_attention_dim=64,
            addition_time_embed_dim=16,
            num_frames=num_frames,
            in_channels=9 + motion_channels,
            motion_channels=motion_channels,
        ),
        audio=AudioProjectionConfig(num_tokens=4, hidden_dim=64),
        id_guider=IDGuiderConfig(channels=(16, 32), latent_scale_factor=4),
        style=(StyleEncoderConfig(hidden_dim=64, num_layers=2, num_heads=4, mouth_size=32, lip_motion=True)
               if style else None),
    )


@dataclass
class ToyRunConfig:
    world: WorldConfig = field(default_factory=lambda: WorldConfig(train_identities=32, eval_identities=6))
    num_frames: int = 8
    # The model's inputs besides audio and reference (toy_model_config): mouth-motion channels, style encoder.
    motion_channels: int = 2
    style: bool = True
    # The VAE trains on chunks as long as the pipeline decodes (SamplerOptions.decode_chunk = the
    # window): its temporal decoder's colour drifts over frames it never saw in a chunk.
    vae_steps: int = 400
    train_steps: int = 2400
    batch_size: int = 4
    learning_rate: float = 1e-3
    p_mean: float = -0.4
    p_std: float = 1.2
    audio_dropout: float = 0.1
    reference_dropout: float = 0.1
    # Motion is the easiest condition to follow: held back often, so audio and style still learn.
    motion_dropout: float = 0.6
    style_dropout: float = 0.3
    style_frames: int = 48
    eval_clips: int = 8
    eval_frames: int = 64
    sample_steps: int = 10
    reference_guidance: float = 1.0
    audio_guidance: float = 2.0
    # Where a mouth motion is given (or comes from a style reference). Ours: on 3c 2.0 took a motion alone from
    # r 0.85 to 0.95; the shipped fine-tune 10 follows one with r 0.96 at it (BENCHMARKS.md, toy world v3).
    motion_guidance: float = 2.0
    # While a style reference is given (ModelDefaults.style_audio_guidance). Ours: on fine-tune 10 the
    # reference's amplitude error ratio goes 0.79 -> 0.69 at 0.5, and its speech r 0.867 -> 0.882 (BENCHMARKS.md).
    style_audio_guidance: float | None = 0.5
    checkpoint_every: int = 0
    seed: int = 0

    @classmethod
    def quick(cls) -> ToyRunConfig:
        """CI-sized: a small world and a short run that still shows learning."""
        # Every character speaks alike, and there is no motion input and no style encoder: in 900 steps personal
        # styles and samples that carry the lips' motion would leave too little for the audio (the full run learns
        # those). With the style encoder, on a world without styles, speech r was 0.38 instead of 0.75.
        world = WorldConfig(train_identities=16, eval_identities=2, clips_per_identity=2, speaking_styles=False)
        return cls(world=world, vae_steps=160, train_steps=900, eval_clips=4, eval_frames=48, sample_steps=8,
                   motion_channels=0, style=False)

    def inference_defaults(self) -> dict:
        """The sampler and mask settings the evaluation uses: stamped into the model file's ``defaults``
        (the training clips' mask expand varies around the evaluation's)."""
        return {"steps": self.sample_steps, "reference_guidance": self.reference_guidance,
                "audio_guidance": self.audio_guidance, "motion_guidance": self.motion_guidance,
                "style_audio_guidance": self.style_audio_guidance, "mask_expand": ModelDefaults.mask_expand}


def packed_frame_features(whisper, waveforms: list[np.ndarray], num_frames: list[int], fps: float = 25.0,
                          max_seconds: float = 27.0) -> list[torch.Tensor]:
    """Per-frame Whisper features of many short clips, several clips per 30 s encoder window (ours).

    Whisper always encodes 30 s; a 5 s clip alone wastes most of it. Clips are laid end to end with 1 s
    of silence between them (each starting on an encoder frame) and cut out again with the same
    ``frame_windows`` the per-video path uses. A clip without speech is encoded alone, as inference
    encodes a silent soundtrack: packed, it would sound like a pause between words. Used for the
    training split only; the evaluation encodes each clip alone, as inference does.
    """
    from ..audio import DEFAULT_FEATURE_WINDOW, Audio, frame_windows

    step = 320  # samples per encoder frame at 16 kHz
    lead = DEFAULT_FEATURE_WINDOW // 2 + 2
    features: list[torch.Tensor] = [None] * len(waveforms)  # type: ignore[list-item]
    order = [index for index, waveform in enumerate(waveforms) if waveform.any()]
    for index in sorted(set(range(len(waveforms))) - set(order)):
        features[index] = silence_features(whisper, num_frames[index], fps)
    while order:
        pack, offsets, cursor = [], [], 0
        while order:
            length = len(waveforms[order[0]]) + 16000
            if pack and cursor + length > max_seconds * 16000:
                break
            index = order.pop(0)
            pack.append(index)
            offsets.append(cursor)
            cursor += int(np.ceil(length / step)) * step
        packed = np.zeros(cursor + 16000, np.float32)
        for index, offset in zip(pack, offsets):
            packed[offset: offset + len(waveforms[index])] = waveforms[index]
        hidden = whisper.encode(Audio(torch.from_numpy(packed), 16000), leading_silence_frames=lead)
        for index, offset in zip(pack, offsets):
            features[index] = frame_windows(hidden, fps, num_frames[index], DEFAULT_FEATURE_WINDOW,
                                            frame_offset=lead + offset // step)
    return features


def silence_features(whisper, num_frames: int, fps: float = 25.0) -> torch.Tensor:
    """Per-frame Whisper features of silence (the LipLeak run's audio), float16."""
    from ..audio import Audio

    silence = Audio(torch.zeros(int(np.ceil((num_frames / fps + 1.0) * 16000))), 16000)
    return whisper.frame_features(silence, fps, num_frames=num_frames).half().contiguous()


def write_world_shards(clips: list[ToyClip], folder: Path, whisper, vae, packed_audio: bool, world: WorldConfig,
                       clips_per_shard: int = 16, report: Report = print) -> None:
    """Shards for one split: frames, masks, landmarks, Whisper features, cached latents, ground truth."""
    from ..audio import Audio
    from ..pipeline import build_masked_video_conditioning, encode_latents
    from ..training.prep import mask_info
    from ..training.shards import write_shard

    folder.mkdir(parents=True, exist_ok=True)
    if packed_audio:
        all_features = packed_frame_features(whisper, [c.waveform for c in clips], [len(c.frames) for c in clips])
    batch, infos = [], []
    for number, clip in enumerate(clips):
        count = len(clip.frames)
        if packed_audio:
            features = all_features[number]
        else:
            features = whisper.frame_features(Audio(torch.from_numpy(clip.waveform), 16000), 25, num_frames=count)
        mask = clip.mask
        frames = uint8_to_model(clip.frames)
        mask_t = uint8_to_mask(mask)
        latents = encode_latents(vae, frames, chunk_size=32)
        masked_latents, _ = build_masked_video_conditioning(vae, frames, mask_t, 0.0, chunk_size=32)
        batch.append({
            "frames": clip.frames, "mask": mask, "landmarks": clip.landmarks,
            "whisper": features.half().numpy(), "latents": latents.half().numpy(),
            "masked_latents": masked_latents.half().numpy(),
            "opening": clip.opening, "silent": clip.silent.astype(np.uint8), "width": clip.width,
            "neutral_opening": clip.neutral_opening,
        })
        infos.append({"source": f"toy-{clip.identity}-{number}", "start_frame": 0, "fps": 25.0,
                      "num_frames": count, "split": clip.split, "identity": clip.identity,
                      "sentences": clip.sentences, "voice": clip.voice, "speed": clip.speed, "style": clip.style,
                      "listening": not clip.sentences, "speaking_style": clip.meta.get("speaking_style"),
                      "clip_style": clip.meta.get("clip_style"),
                      **mask_info(clip.frames.shape[1], ModelDefaults.upper_edge, world.mask_hold,
                                  clip.meta.get("mask_expand", ModelDefaults.mask_expand))})
        if len(batch) == clips_per_shard or number == len(clips) - 1:
            write_shard(folder / f"shard-{number // clips_per_shard:05d}.safetensors", batch, infos)
            batch, infos = [], []
    report(f"wrote {len(clips)} clips to {folder}")


def run_toy(output: str | Path, whisper_dir: str | Path, config: ToyRunConfig | None = None,
            report: Report = print, threads: int | None = None) -> dict:
    """The one-command proof. Returns (and writes to ``<output>/results.json``) the evaluation figures."""
    from safetensors.torch import load_file, save_file

    from ..audio import load_whisper_encoder
    from ..training.train import TrainConfig, train
    from .evaluate import evaluate
    from .vae import load_toy_vae, save_toy_vae, train_toy_vae

    config = config or ToyRunConfig()
    if threads:
        torch.set_num_threads(threads)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.time()

    # 1-3. World, toy VAE, shards (Whisper features + cached latents); reused when already built
    # for the same world / VAE settings, so training settings can be explored without redoing them.
    data_key = json.dumps({"world": dataclasses.asdict(config.world), "vae_steps": config.vae_steps,
                           "vae_frames": config.num_frames, "eval_frames": config.eval_frames,
                           "seed": config.seed, "whisper": str(whisper_dir)}, sort_keys=True)
    stamp, vae_path = output / "shards" / "complete.json", output / "toy_vae.safetensors"
    silence_path = output / "shards" / "silence_features.safetensors"
    if stamp.is_file() and stamp.read_text() == data_key and vae_path.is_file():
        vae = load_toy_vae(vae_path)
        report(f"reusing the world, VAE and shards in {output}")
    else:
        clips = generate_world(config.world)
        train_clips = [c for c in clips if c.split == "train"]
        eval_clips = [c for c in clips if c.split == "eval"]
        timings["world_s"] = time.time() - started
        report(f"world: {len(train_clips)} train / {len(eval_clips)} eval clips, "
               f"{sum(len(c.frames) for c in clips)} frames ({timings['world_s']:.0f} s)")
        mark = time.time()
        focus = [c.landmarks[:, [61, 291]].mean(1) for c in train_clips]
        vae = train_toy_vae([c.frames for c in train_clips], config.vae_steps, seed=config.seed, focus=focus,
                            frames_per_clip=config.num_frames,
                            progress=lambda step, loss: report(
                                f"VAE step {step + 1}/{config.vae_steps} loss {loss:.4f} ({time.time() - mark:.0f} s)")
                            if (step + 1) % 100 == 0 else None)
        save_toy_vae(vae, vae_path)
        timings["vae_s"] = time.time() - mark
        report(f"VAE: {config.vae_steps} steps ({timings['vae_s']:.0f} s)")
        mark = time.time()
        whisper = load_whisper_encoder(whisper_dir)
        write_world_shards(train_clips, output / "shards" / "train", whisper, vae, True, config.world, report=report)
        write_world_shards(eval_clips, output / "shards" / "eval", whisper, vae, False, config.world, report=report)
        save_file({"features": silence_features(whisper, config.eval_frames, config.world.fps)}, str(silence_path))
        del whisper, clips
        stamp.write_text(data_key)
        timings["shards_s"] = time.time() - mark

    # 4. Training: the same loop as full size
    mark = time.time()
    torch.manual_seed(config.seed)
    from ..models import SayAnythingModel

    model = SayAnythingModel(toy_model_config(config.num_frames, config.motion_channels, config.style))
    train_config = TrainConfig(
        data=str(output / "shards" / "train"), output=str(output / "run"), num_frames=config.num_frames,
        batch_size=config.batch_size, max_steps=config.train_steps, learning_rate=config.learning_rate,
        lr_warmup_steps=min(100, config.train_steps // 10), p_mean=config.p_mean, p_std=config.p_std,
        audio_dropout=config.audio_dropout, reference_dropout=config.reference_dropout,
        motion_dropout=config.motion_dropout, style_dropout=config.style_dropout, style_frames=config.style_frames,
        noise_aug_strength=0.0, embed_vae=True, seed=config.seed, log_every=25,
        checkpoint_every=config.checkpoint_every, weight_decay=0.0, inference_defaults=config.inference_defaults())

    def on_step(step: int, total: int, loss: float) -> None:
        if step % 100 == 0 or step == total:
            report(f"train step {step}/{total} loss {loss:.4f} ({time.time() - mark:.0f} s)")

    shutil.rmtree(output / "run", ignore_errors=True)  # a fresh run, not a resume of an older one
    model_path = train(train_config, model=model, vae=vae, progress=on_step)
    timings["train_s"] = time.time() - mark

    # 5. Evaluation on held-out identities and sentences
    mark = time.time()
    results = evaluate(model.eval(), vae, output / "shards" / "eval", config, output,
                       silence_features=load_file(str(silence_path))["features"])
    timings["eval_s"] = time.time() - mark
    timings["total_s"] = time.time() - started
    results.update({"timings": {k: round(v, 1) for k, v in timings.items()}, "model": str(model_path),
                    "config": dataclasses.asdict(config), "threads": torch.get_num_threads()})
    (output / "results.json").write_text(json.dumps(results, indent=2))
    report(json.dumps({k: v for k, v in results.items() if k != "config"}, indent=2))
    return results
