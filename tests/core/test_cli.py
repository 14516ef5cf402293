import json

import torch

from benchmarks.sampling import main as sampling_benchmark
from lipsync_core.__main__ import main
from lipsync_core.checkpoint import load_checkpoint, read_checkpoint_metadata
from tests.support.svd import write_tiny_svd_checkpoint


def test_init_dry_run_full_reports_svd_plus_ours(capsys):
    assert main(["init", "--size", "full", "--dry-run"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["size"] == "full"
    assert report["parameters"]["unet"] == 1_524_623_082 + 320 * 9
    assert report["parameters"]["total"] == 1_539_860_650


def test_init_tiny_writes_a_loadable_model_and_never_overwrites(tmp_path, capsys):
    path = tmp_path / "tiny.safetensors"
    assert main(["init", "--size", "tiny", "--vae", "-o", str(path)]) == 0
    model, vae = load_checkpoint(path)
    assert vae is not None and model.dtype == torch.float32
    before = path.read_bytes()
    assert main(["init", "--size", "tiny", "-o", str(path)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_init_from_svd_file(tmp_path, capsys):
    svd = write_tiny_svd_checkpoint(tmp_path / "svd_xt.safetensors")
    assert main(["init", "--svd", str(svd), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == "tiny"
    out = tmp_path / "start.safetensors"
    assert main(["init", "--svd", str(svd), "-o", str(out)]) == 0
    model, vae = load_checkpoint(out)
    assert vae is None and model.dtype == torch.float16  # SVD's own precision by default
    assert torch.count_nonzero(model.unet.conv_in.weight[:, 8:]) == 0
    assert read_checkpoint_metadata(out)["format"] == "sayanything"


def test_unet_step_benchmark_reports_both_variants(tmp_path, capsys):
    report_path = tmp_path / "bench.json"
    args = ["unet-step", "--size", "tiny", "--frames", "2", "--resolution", "32", "--repeats", "1", "--warmup", "0",
            "--threads", "1", "--json", str(report_path)]
    assert sampling_benchmark(args) == 0
    report = json.loads(report_path.read_text())
    ours, stock = report["sayanything"], report["stock_diffusers"]
    assert ours["parameters"] > stock["parameters"]  # + mask channel, audio projection, ID-Guider
    assert ours["step_seconds_median"] > 0 and stock["step_seconds_median"] > 0
    assert report["step_time_ratio"] == ours["step_seconds_median"] / stock["step_seconds_median"]
    assert ours["flops_per_step"] > 0 and ours["peak_rss_bytes"] >= ours["rss_before_model_bytes"]
    assert report["settings"]["guidance_branches"] == 3


def test_speeds_benchmark_reports_every_speed_mode_against_quality(tmp_path, capsys, whisper_tiny_dir):
    # One toy clip of 8 frames (one window): the figures are meaningless at this size, the report's
    # shape and its arithmetic are what is checked.
    report_path = tmp_path / "sampler.json"
    args = ["speeds", "--whisper", str(whisper_tiny_dir), "--clips", "1", "--frames", "8", "--threads", "1",
            "--mode", 'k4={"steps": 4}', "--json", str(report_path)]
    assert sampling_benchmark(args) == 0
    report = json.loads(report_path.read_text())
    assert report["device"] and report["eval"]["clips"] == 1
    modes = {mode["name"]: mode for mode in report["modes"]}
    assert list(modes) == ["quality", "balanced", "fast", "k4"]
    for mode in modes.values():
        for key in ("seconds_per_output_second", "sampling_seconds_per_output_second", "unet_calls_per_output_second",
                    "tflop_per_output_second", "identity_error"):
            assert mode[key] > 0
        assert mode["sampling_seconds_per_output_second"] < mode["seconds_per_output_second"]
        assert -1 <= mode["correlation_speech"] <= 1 and 0 <= mode["lipleak"] <= 1
        quality_time = modes["quality"]["seconds_per_output_second"]
        assert mode["speedup"] == quality_time / mode["seconds_per_output_second"]
    assert modes["quality"]["speedup"] == 1.0
    # 8 frames = one window; quality's 10 steps x 2 branches (the toy model's guidance 1.0 / 2.0) per 8 frames.
    assert modes["quality"]["unet_calls_per_output_second"] == 10 * 2 / (8 / 25)
    assert modes["k4"]["unet_calls_per_output_second"] == 4 * 2 / (8 / 25)
    assert modes["fast"]["tflop_per_output_second"] < modes["quality"]["tflop_per_output_second"]
    assert modes["fast"]["deep_reused_calls_per_output_second"] > 0 == modes["quality"][
        "deep_reused_calls_per_output_second"]
