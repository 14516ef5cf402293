"""The accelerate training loop: two CPU processes (gloo), checkpoint, exact resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lipsync_core.checkpoint import load_checkpoint, read_model_defaults, save_checkpoint
from lipsync_core.configs import SayAnythingConfig, build_vae
from lipsync_core.models import SayAnythingModel
from lipsync_core.training.train import TrainConfig, select_trainable

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def init_checkpoint(tmp_path_factory):
    """A random tiny model with a tiny VAE embedded: what `--init` starts from."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("init") / "tiny.safetensors"
    return save_checkpoint(path, SayAnythingModel(SayAnythingConfig.preset("tiny")), vae=build_vae("tiny"))


def _launch(shards: Path, init: Path, output: Path, *extra: str) -> None:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "lipsync_core", "train", "--data", str(shards), "--output", str(output), "--init", str(init),
               "--num-frames", "4", "--batch-size", "1", "--max-steps", "4", "--learning-rate", "1e-3",
               "--lr-warmup-steps", "1", "--log-every", "1", "--checkpoint-every", "0", "--embed-vae",
               "--ema-decay", "0.9", "--seed", "5", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _losses(output: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    return {record["step"]: record["loss"] for record in records}


def test_two_processes_checkpoint_and_exact_resume(shard_folder, init_checkpoint, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _launch(shard_folder, init_checkpoint, straight, "--sample-every", "4", "--sample-steps", "2")
    assert (straight / "samples" / "sample-0000004.png").is_file()
    _launch(shard_folder, init_checkpoint, resumed, "--stop-at-step", "2")
    assert (resumed / "state-0000002" / "complete").is_file() and not (resumed / "model.safetensors").exists()
    _launch(shard_folder, init_checkpoint, resumed)

    reference, continued = _losses(straight), _losses(resumed)
    assert sorted(reference) == [1, 2, 3, 4] and sorted(continued) == [1, 2, 3, 4]
    assert len(set(reference.values())) == 4  # it trains: the loss moves
    for step in (3, 4):  # steps after the resume continue exactly
        assert continued[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7)

    # The final files are checkpoints `run` and the nodes load as they are, VAE embedded, equal weights.
    model, vae = load_checkpoint(straight / "model.safetensors")
    assert vae is not None and model.config.unet.num_frames == 8
    first, second = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=1e-5, atol=1e-6)
    # The files carry what the run trained with: the data's crop size and mask hold, the window,
    # canvas noise; settings the run did not touch stay the init model's.
    defaults = read_model_defaults(straight / "model.safetensors")
    assert (defaults.crop_size, defaults.window, defaults.overlap, defaults.mask_hold) == (64, 4, 1, 0.3)
    assert defaults.noise_aug_strength == 0.02 and defaults.steps == read_model_defaults(init_checkpoint).steps
    start = load_file(str(init_checkpoint))
    assert any(not torch.equal(start[key], first[key]) for key in first if key.startswith("audio_projection."))


def test_trainable_parts():
    model = SayAnythingModel(SayAnythingConfig.preset("tiny"))
    total = sum(p.numel() for p in model.parameters())
    counts = {name: sum(p.numel() for p in select_trainable(model, name)) for name in ("all", "attention", "new")}
    assert counts["all"] == total > counts["attention"] > counts["new"] > 0
    select_trainable(model, "new")
    assert not model.unet.conv_out.weight.requires_grad
    assert model.audio_projection.layer_mix.weight.requires_grad and model.unet.conv_in.weight.requires_grad
    assert select_trainable(model, "style") == []  # nothing to teach a model without a style encoder
    from lipsync_core.toy.run import toy_model_config

    styled = SayAnythingModel(toy_model_config())
    chosen = select_trainable(styled, "style")
    assert sum(p.numel() for p in chosen) == sum(p.numel() for p in styled.style_encoder.parameters())
    assert not styled.unet.conv_in.weight.requires_grad and styled.style_encoder.to_tokens.weight.requires_grad


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="trainable"):
        TrainConfig(data="d", output="o", trainable="some")
    with pytest.raises(ValueError, match="audio_dropout"):
        TrainConfig(data="d", output="o", audio_dropout=1.0)
    with pytest.raises(ValueError, match="mouth_loss_weight"):
        TrainConfig(data="d", output="o", mouth_loss_weight=-1.0)


def test_from_svd_single_file_with_bf16_checkpointing_and_partial_training(shard_folder, tmp_path):
    """`--init svd_xt.safetensors` (a tiny file in SVD's original layout), bf16 autocast, gradient
    checkpointing, attention-only training: it runs in one process and only the chosen parts move."""
    from lipsync_core.training.train import train
    from tests.support.svd import write_tiny_svd_checkpoint

    svd = write_tiny_svd_checkpoint(tmp_path / "svd_tiny.safetensors")
    # A full-precision run first in the same process (as a notebook or the toy run would): the bf16 run
    # after it must not be refused by accelerate's process-wide state.
    train(TrainConfig(data=str(shard_folder), output=str(tmp_path / "fp32"), init=str(svd), num_frames=4,
                      batch_size=1, max_steps=1, mixed_precision="no", checkpoint_every=0))
    config = TrainConfig(data=str(shard_folder), output=str(tmp_path / "run"), init=str(svd), num_frames=4,
                         batch_size=1, max_steps=2, learning_rate=1e-3, lr_warmup_steps=1, trainable="attention",
                         mixed_precision="bf16", gradient_checkpointing=True, log_every=1, checkpoint_every=0)
    final = train(config)
    model, vae = load_checkpoint(final)
    assert vae is None  # the SVD VAE is not embedded unless asked
    from lipsync_core.svd_import import model_from_svd

    start, _ = model_from_svd(svd)
    before, after = start.state_dict(), model.state_dict()
    moved = {key for key in before if not torch.equal(before[key], after[key])}
    assert any(".attentions." in key for key in moved)
    assert not any(key.startswith("unet.conv_out.") or ".resnets." in key for key in moved)
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 2
