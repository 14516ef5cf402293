"""Mouth Motion from Audio: the model file, training on shards with real Whisper features, prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lipsync_core.audio import Audio, load_audio
from lipsync_core.checkpoint import CheckpointError
from lipsync_core.models.mouth_motion import (
    AudioToMouthMotion,
    MouthMotionConfig,
    load_mouth_motion_model,
    save_mouth_motion_model,
)
from lipsync_core.motion import mouth_motion_from_audio, mouth_width
from lipsync_core.training.motion import (
    MotionTrainConfig,
    evaluate_mouth_motion,
    load_motion_clips,
    train_mouth_motion,
)


@pytest.fixture(scope="module")
def trained(shard_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("motion_run")
    config = MotionTrainConfig(data=str(shard_folder), output=str(output), eval_data=str(shard_folder),
                               num_frames=24, batch_size=4, max_steps=60, hidden_dim=64, log_every=10)
    return train_mouth_motion(config), output


def test_training_learns_and_writes_a_loadable_file(trained, shard_folder):
    path, output = trained
    log = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    model = load_mouth_motion_model(path)
    assert model.config.hidden_dim == 64 and model.config.num_layers == 5 and model.config.feature_dim == 384
    # the stored rest shape is the data's mean closed mouth
    clips = load_motion_clips(shard_folder)
    np.testing.assert_allclose(model.rest.numpy(), np.mean([c.rest for c in clips], axis=0), atol=1e-6)
    results = json.loads((output / "results.json").read_text())
    assert results["clips"] == len(clips) and -1 <= results["r_all_frames"] <= 1
    assert evaluate_mouth_motion(model, shard_folder)["r_all_frames"] == pytest.approx(results["r_all_frames"])


def test_model_file_round_trip_and_clear_errors(tmp_path, trained):
    torch.manual_seed(0)
    model = AudioToMouthMotion(MouthMotionConfig(hidden_dim=32, temporal_layers=2))
    path = save_mouth_motion_model(tmp_path / "m.safetensors", model)
    features = torch.randn(1, 12, 5, 10, 384)
    torch.testing.assert_close(load_mouth_motion_model(path)(features), model.eval()(features))
    with pytest.raises(ValueError, match=r"expects Whisper features \[B, T, 5, 10, 384\]"):
        model(torch.randn(1, 12, 5, 8, 384))
    with pytest.raises(CheckpointError, match="No mouth motion model at .*missing.safetensors"):
        load_mouth_motion_model(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"format": "sayanything"})
    with pytest.raises(CheckpointError, match="other.safetensors is not a SayAnything mouth motion model"):
        load_mouth_motion_model(tmp_path / "other.safetensors")


def test_motion_from_audio_at_any_fps_on_a_target_mouth(trained, whisper_encoder, speech_wav):
    model = load_mouth_motion_model(trained[0])
    audio = load_audio(speech_wav)
    motion = mouth_motion_from_audio(model, whisper_encoder, audio, fps=30)
    expected = int(audio.num_samples / audio.sample_rate * 30)
    assert motion.fps == 30 and abs(motion.num_frames - expected) <= 1
    np.testing.assert_allclose(motion.rest, model.rest.numpy())
    # speech opens the mouth more than the silence around it does
    silence = mouth_motion_from_audio(model, whisper_encoder, Audio(torch.zeros(32000), 16000), fps=30)
    assert np.ptp(motion.opening()) > np.ptp(silence.opening())
    fixed = mouth_motion_from_audio(model, whisper_encoder, audio, fps=25, num_frames=40)
    assert fixed.num_frames == 40
    assert mouth_width(fixed.rest) > 0


def test_diffusion_training_with_a_motion_input(shard_folder, tmp_path):
    """A model with the mouth-motion input trains on the shards' own landmarks (rendered), with dropout."""
    import dataclasses

    from lipsync_core.checkpoint import load_checkpoint
    from lipsync_core.configs import SayAnythingConfig, build_vae
    from lipsync_core.models import SayAnythingModel
    from lipsync_core.motion import MOTION_CHANNELS
    from lipsync_core.training.train import TrainConfig, train

    tiny = SayAnythingConfig.preset("tiny")
    config = dataclasses.replace(tiny, unet=dataclasses.replace(
        tiny.unet, in_channels=9 + MOTION_CHANNELS, motion_channels=MOTION_CHANNELS))
    torch.manual_seed(0)
    model = SayAnythingModel(config)
    path = train(TrainConfig(data=str(shard_folder), output=str(tmp_path / "run"), num_frames=4, batch_size=2,
                             max_steps=3, learning_rate=1e-2, lr_warmup_steps=1, checkpoint_every=0,
                             motion_dropout=0.0, mouth_loss_weight=4.0, embed_vae=True), model=model,
                 vae=build_vae("tiny"))
    loaded, _ = load_checkpoint(path)
    assert loaded.config.unet.motion_channels == MOTION_CHANNELS
    # the condition reached the UNet: its zero-initialised weights moved
    assert loaded.unet.conv_in.weight[:, 9:].abs().sum() > 0


def test_the_mouth_loss_weight_lies_on_the_lips(shard_folder, tmp_path):
    """mouth_loss_weight: the weighed cells are the window's lips (grown by a cell), a small part of the mask, and
    the loss counts an error there (1 + weight) times."""
    from torch.utils.data import default_collate

    from lipsync_core.configs import SayAnythingConfig, build_vae
    from lipsync_core.models import SayAnythingModel
    from lipsync_core.training.dataset import LipSyncWindows
    from lipsync_core.training.train import DiffusionLoss, TrainConfig, _prepare_batch

    batch = default_collate([LipSyncWindows(shard_folder, 4, landmarks=True, seed=0)[0]])
    config = TrainConfig(data=str(shard_folder), output=str(tmp_path), mouth_loss_weight=4.0, noise_aug_strength=0.0)
    inputs = _prepare_batch(batch, build_vae("tiny"), config, torch.Generator().manual_seed(0), "cpu")
    latents, latent_mask, mouth = inputs[0], inputs[2], inputs[-1]
    assert mouth.shape == latent_mask.shape and float(mouth.max()) > 0.5
    cells = latents.shape[-1] / batch["frames"].shape[-1]  # latent cells per crop pixel
    marks = batch["landmarks"][0] * cells
    for t in range(mouth.shape[1]):
        for point, least in ((61, 0.0), (291, 0.0), (13, 0.5), (14, 0.5)):  # lip corners, inner lips' middle
            x, y = (int(v) for v in marks[t, point])
            assert mouth[0, t, 0, y, x] > least
        x, y = (int(v) for v in marks[t, 468])  # an eye
        assert mouth[0, t, 0, y, x] == 0
    assert (mouth * latent_mask).sum() < 0.5 * latent_mask.sum()
    # Weighed once with the mouth and once without, the same draws give a loss between 1x and 5x.
    torch.manual_seed(0)
    objective = DiffusionLoss(SayAnythingModel(SayAnythingConfig.preset("tiny")), config)
    with torch.no_grad():
        plain, weighed = objective(*inputs[:-1]), objective(*inputs)
    assert plain < weighed < 5 * plain


@pytest.mark.slow  # a small toy world, Whisper on all of it and 400 training steps: a few minutes on a CPU core
def test_audio_to_motion_follows_the_true_opening_on_held_out_speakers(whisper_encoder, tmp_path):
    from lipsync_core.toy.run import packed_frame_features
    from lipsync_core.toy.world import WorldConfig, generate_world
    from lipsync_core.training.prep import mask_info
    from lipsync_core.training.shards import write_shard

    world = WorldConfig(train_identities=16, eval_identities=4, seed=11)
    clips = generate_world(world)
    for split in ("train", "eval"):
        chosen = [c for c in clips if c.split == split]
        if split == "train":  # as the toy run: training clips packed into shared 30 s windows, held-out ones alone
            features = packed_frame_features(whisper_encoder, [c.waveform for c in chosen],
                                             [len(c.frames) for c in chosen])
        else:
            features = [whisper_encoder.frame_features(Audio(torch.from_numpy(c.waveform), 16000), 25,
                                                       num_frames=len(c.frames)) for c in chosen]
        data = [{"frames": c.frames, "mask": c.mask, "landmarks": c.landmarks, "whisper": f.half().numpy(),
                 "opening": c.opening, "silent": c.silent.astype(np.uint8)} for c, f in zip(chosen, features)]
        infos = [{"source": f"toy-{c.identity}", "start_frame": 0, "fps": 25.0, "num_frames": len(c.frames),
                  **mask_info(world.crop_size, "nose", world.mask_hold)} for c in chosen]
        (tmp_path / split).mkdir()
        write_shard(tmp_path / split / "shard-00000.safetensors", data, infos)
    train_mouth_motion(MotionTrainConfig(data=str(tmp_path / "train"), output=str(tmp_path / "run"),
                                         eval_data=str(tmp_path / "eval"), max_steps=400))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["r_all_frames"] >= 0.85, results
