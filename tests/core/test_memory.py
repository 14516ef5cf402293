"""The memory plan (``lipsync_core.memory``): its costs stay what fake-tensor measurement says, its predictions
meet the card targets, it lowers only the settings the user left on auto and refuses a card too small with one
message; and the one-shot GPU check in its CPU mode."""

from __future__ import annotations

import json

import pytest
import torch

from lipsync_core import memory
from lipsync_core.__main__ import main
from lipsync_core.memory import COSTS, GIB, RunShape, fit, fit_to_device, measure_costs, predict
from lipsync_core.plan import SamplerOptions, SamplingPlan


def _plan(vram: float, *flags: str) -> dict:
    return json.loads(_run_cli(["plan", "--vram", str(vram), *flags]))


def _run_cli(argv, capsys=None) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


def test_the_tiny_costs_are_what_fake_tensors_measure():
    """The table and the measurement in step (tiny model here; full size: the slow test below)."""
    measured = measure_costs("tiny", latent_size=16, frames=8, ff_chunks=(1,))
    table = COSTS["tiny"]
    assert measured["unet_per_frame_pixel"][1] == pytest.approx(table.unet_per_frame_pixel[1], rel=0.05)
    assert measured["decode_per_frame_pixel"] == pytest.approx(table.decode_per_frame_pixel, rel=0.05)
    assert measured["encode_per_frame_pixel"] == pytest.approx(table.encode_per_frame_pixel, rel=0.05)


@pytest.mark.slow
def test_the_full_size_costs_are_what_fake_tensors_measure():
    measured = memory.costs_from(measure_costs("full"))
    table = COSTS["full"]
    for chunks, cost in table.unet_per_frame_pixel.items():
        assert measured.unet_per_frame_pixel[chunks] == pytest.approx(cost, rel=0.05)
    assert measured.decode_per_frame_pixel == pytest.approx(table.decode_per_frame_pixel, rel=0.05)
    assert measured.encode_per_frame_pixel == pytest.approx(table.encode_per_frame_pixel, rel=0.05)


def test_full_size_plans_meet_the_card_targets():
    quality = _plan(8)
    assert set(quality) >= {"fits", "peak_gib", "phases", "settings"}
    assert quality["fits"] and quality["peak_gib"] <= 7.2
    assert set(quality["phases"]) == {"weights", "encode", "unet", "decode"}
    for speed in ("balanced", "fast"):
        assert _plan(12, "--speed", speed)["fits"]
    motion = _plan(12, "--motion-guidance", "2")
    assert motion["fits"] and motion["settings"]["branches"] == 4
    assert not _plan(4)["fits"]  # the weights alone nearly fill it; the command still exits 0


def test_a_smaller_card_gets_smaller_settings_and_the_users_stay():
    shape = RunShape(weight_bytes=int(3.05 * GIB), latent_size=64)
    plan = SamplingPlan(decode_chunk=8, window=14, window_batch=2)
    roomy, roomy_prediction = fit(shape, plan, int(80 * GIB))
    assert roomy == plan and roomy_prediction.fits  # nothing to lower on a large card
    small, prediction = fit(shape, plan, int(8 * GIB))
    assert prediction.fits and prediction.peak < predict(shape, plan, int(8 * GIB)).peak
    assert (small.window_batch, small.decode_chunk) <= (plan.window_batch, plan.decode_chunk)
    kept, _ = fit(shape, plan, int(8 * GIB), fixed=frozenset({"decode_chunk", "window_batch"}))
    assert (kept.decode_chunk, kept.window_batch) == (8, 2)


def test_fit_to_device_keeps_cpu_runs_and_refuses_a_card_too_small(tiny_model, tiny_vae, monkeypatch):
    from lipsync_core.checkpoint import LoadedModel

    loaded = LoadedModel(tiny_model, tiny_vae, "tiny")
    plan = SamplerOptions().resolve(loaded.defaults)
    assert fit_to_device(plan, SamplerOptions(), loaded, 32, "cpu") is plan
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    with pytest.raises(ValueError, match=r"Test GPU has 0\.0 GiB free, but the smallest plan for this run needs"):
        fit_to_device(plan, SamplerOptions(), loaded, 32, "cuda", free_bytes=1024)
    fitted = fit_to_device(plan, SamplerOptions(), loaded, 32, "cuda", free_bytes=64 * GIB)
    assert fitted == plan


def test_gpu_check_cpu_mode(tmp_path):
    out = tmp_path / "gpu_check.json"
    _run_cli(["gpu-check", "--device", "cpu", "--size", "tiny", "--seconds", "0.32", "0.64", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["parity"]["float32"]["max_relative_error"] < 1e-4
    for speed in ("quality", "balanced", "fast", "fast_spilled"):
        run = report["presets"][speed]
        assert run["frames"] == 8 and run["seconds_per_output_second"]["sampling"] > 0
    quality = report["presets"]["quality"]
    assert quality["unet_tflop_per_forward"] > 0 and quality["achieved_unet_tflop_per_second"] > 0
    assert report["presets"]["fast"]["unet_forwards"]["reused"] > 0  # deep features reused on its middle steps
    short, long = (report["length"]["fast"][key] for key in ("0.32 s", "0.64 s"))
    assert long["frames"] == 2 * short["frames"]
    assert set(report["cards"]) == {"8 GB", "12 GB", "16 GB", "24 GB"}
    assert all("ran" not in card and card["predicted"]["fits"] for card in report["cards"].values())


def test_musetalk_runs_at_256_px_fit_a_4_gb_card():
    """MuseTalk 1.5 in fp16 (850 M + 84 M parameters), batches of 8 frames, decode chunk 8: the memory plan's
    costs for its UNet2D and SD VAE (measured like the others)."""
    weights = (849_947_844 + 83_653_863) * 2
    shape = RunShape(weights, latent_size=32, branches=1, value_bytes=2, size="musetalk", decode_context=0)
    plan, prediction = fit(shape, SamplingPlan(steps=1, window=8, overlap=0, decode_chunk=8), 4 * GIB)
    assert prediction.fits and (plan.window, plan.decode_chunk) == (8, 8)
    decoded = 8 * 32 * 32 * COSTS["musetalk"].decode_per_frame_pixel  # no context frames: the SD VAE is 2-D
    assert prediction.phases["decode"] - weights == pytest.approx(decoded)
