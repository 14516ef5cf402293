"""The toy proof, CI-sized: the whole pipeline (world, toy VAE, Whisper features, the real training loop,
the sampler, evaluation) in one command with fixed seeds, and it must show lip sync being learned.

About 20 minutes on one core of the 2-core CI machine: part of the default suite, so CI proves learning every
run. It is the CLI's own ``toy --quick``, started in a process of its own as soon as the tests are collected
(``quick_toy_run``), so the other tests run beside it. The thresholds are ones that the two cheap impostors
fail (checked below without training): a speech/silence detector (mouth half open whenever anyone speaks)
and a mouth that never opens.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from lipsync_core.checkpoint import load_checkpoint, read_model_defaults
from lipsync_core.toy.evaluate import opening_figures
from lipsync_core.toy.run import ToyRunConfig
from lipsync_core.toy.world import WorldConfig, generate_world

MIN_SPEECH_CORRELATION = 0.3  # r on speech frames only
MAX_LAG = 1  # frames
MIN_DUB_MARGIN = 0.2  # cross-dubbed: r with the new speech minus r with the source's own mouth


def passes(figures: dict) -> bool:
    return figures["speech_correlation"] > MIN_SPEECH_CORRELATION and abs(figures["best_lag"]) <= MAX_LAG


def test_thresholds_fail_a_speech_detector_and_a_shut_mouth():
    clips = generate_world(WorldConfig(train_identities=0, eval_identities=4, clips_per_identity=1, seed=21))
    truth, silent = [c.opening for c in clips], [c.silent for c in clips]
    detector = [np.where(s, 0.0, 0.5).astype(np.float32) for s in silent]
    shut = [np.zeros_like(t) for t in truth]
    perfect = opening_figures(truth, truth, silent)
    assert passes(perfect) and perfect["best_lag"] == 0
    detected = opening_figures(detector, truth, silent)
    assert detected["correlation"] > 0.5  # the pooled figure alone would be fooled
    assert not passes(detected) and not passes(opening_figures(shut, truth, silent))
    late = opening_figures([np.roll(t, 3) for t in truth], truth, silent)  # a mouth 3 frames late
    assert late["best_lag"] == 3 and not passes(late)


def test_quick_toy_run_learns_lip_sync(quick_toy_run):
    results = json.loads((quick_toy_run / "results.json").read_text())
    quick = ToyRunConfig.quick()
    assert results["config"] == json.loads(json.dumps(dataclasses.asdict(quick)))  # the run CI means to prove
    # Learning: on speech frames the generated mouth follows the speech, in time.
    assert passes(results), results
    # Cross-dubbing: it follows the new speech, not the talking source's own mouth.
    assert results["dub_vs_new_audio"] > results["dub_vs_source_mouth"] + MIN_DUB_MARGIN, results
    # Editing is local: outside the mask every pixel is the input's.
    assert results["outside_identical"] == 1.0
    assert results["ruler_on_ground_truth"] > 0.97
    model, vae = load_checkpoint(quick_toy_run / "run" / "model.safetensors")
    assert vae is not None and model.config.unet.num_frames == quick.num_frames
    # The file carries how to run it: the run's window, crops, canvas noise and sampler settings.
    defaults = read_model_defaults(quick_toy_run / "run" / "model.safetensors")
    assert (defaults.window, defaults.crop_size, defaults.noise_aug_strength) == (quick.num_frames, 64, 0.0)
    assert (defaults.steps, defaults.audio_guidance) == (quick.sample_steps, quick.audio_guidance)
