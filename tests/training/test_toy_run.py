"""The toy proof, CI-sized: the whole pipeline (world, toy VAE, Whisper features, the real training loop,
the sampler, evaluation) in one call with fixed seeds, and it must show lip sync being learned.

About 6 minutes on an idle 2-core CPU: part of the default suite, so CI proves learning every run."""

from __future__ import annotations

import json

from lipsync_core.checkpoint import load_checkpoint
from lipsync_core.toy.run import ToyRunConfig, run_toy


def test_quick_toy_run_learns_lip_sync(tmp_path, whisper_tiny_dir):
    results = run_toy(tmp_path, whisper_tiny_dir, ToyRunConfig.quick(), report=lambda line: None)
    # Learning: the generated mouth follows the clip's own speech far more than shuffled speech.
    assert results["correlation"] > results["shuffled_correlation"] + 0.3, results
    assert results["correlation"] > 0.3, results
    # Editing is local: outside the mask every pixel is the input's.
    assert results["outside_identical"] == 1.0
    assert results["ruler_on_ground_truth"] > 0.97
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["correlation"] == results["correlation"]
    model, vae = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert vae is not None and model.config.unet.num_frames == ToyRunConfig.quick().num_frames
