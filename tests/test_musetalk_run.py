"""MuseTalk 1.5 inside the pack's pipeline (``lipsync_core.musetalk``): its files through ``checkpoint.load``, its
computation on the pack's stages against upstream's formulas, the in-memory and streamed runs frame for frame,
frames without a face passed through, and every bad input refused before any work with a message naming it.

Models: a tiny random MuseTalk UNet in upstream's layout (``unet.pth`` + ``musetalk.json``), a tiny SD-shaped VAE
in the original single-file layout, and a random multilingual Whisper tiny (the real openai/whisper-tiny is not
available offline; the real tiny.en is, and MuseTalk must refuse it). Faces: mediapipe on the real astronaut.
"""

from __future__ import annotations

import json
import types
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open

from lipsync_core import inference
from lipsync_core.audio import Audio, load_whisper_encoder
from lipsync_core.checkpoint import load
from lipsync_core.configs import CheckpointError
from lipsync_core.dubbing import TensorSource, dub, lipsync
from lipsync_core.face import FaceTrack, warp_to_crop
from lipsync_core.media import VideoWriter
from lipsync_core.models import musetalk as mt
from lipsync_core.models.sd_vae import SDVAEError
from lipsync_core.musetalk import MUSETALK_DEFAULTS, MuseTalkLoaded
from lipsync_core.plan import SamplerOptions, StreamSettings
from lipsync_core.streaming import lipsync_file
from lipsync_core.tensors import images_to_model, model_to_images, uint8_to_frames
from tests.support import musetalk as support
from tests.support.media import probe, write_clip

NO_FACE = (4, 5)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return support.write_musetalk_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def loaded(files):
    return load(files["unet"], vae=files["vae"])


@pytest.fixture(scope="module")
def whisper(files):
    return load_whisper_encoder(files["whisper"])


def _still(astronaut, count: int, size=(333, 257)) -> np.ndarray:
    """The portrait (200 px) drifting over an odd-sized grey frame; frames in NO_FACE are grey."""
    width, height = size
    face = cv2.resize(astronaut, (200, 200), interpolation=cv2.INTER_AREA)
    frames = np.full((count, height, width, 3), 128, np.uint8)
    for index in range(count):
        if index not in NO_FACE:
            x, y = 40 + (index % 7) * 5, 30 + (index % 5) * 3
            frames[index, y : y + 200, x : x + 200] = face
    return frames


class Chunks:
    """A ``FrameSink`` that keeps what the orchestrator hands it."""

    def __init__(self):
        self.chunks = []

    @contextmanager
    def writing(self, num_frames, audio):
        yield self.chunks.append


# --------------------------------------------------------------------------------------------------
# Files


def test_load_recognises_upstream_and_converted_files(files, loaded, tmp_path):
    from lipsync_core.__main__ import main

    assert isinstance(loaded, MuseTalkLoaded) and loaded.family == "MuseTalk 1.5"
    assert loaded.defaults == MUSETALK_DEFAULTS and (loaded.defaults.crop_size, loaded.defaults.steps) == (256, 1)
    output = tmp_path / "musetalk.safetensors"
    assert main(["convert", str(files["unet"]), "-o", str(output)]) == 0
    with safe_open(str(output), "pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == "musetalk" and json.loads(metadata["defaults"]) == json.loads(
        MUSETALK_DEFAULTS.to_json())
    converted = load(output, vae=files["vae"])
    assert isinstance(converted, MuseTalkLoaded) and converted.defaults == MUSETALK_DEFAULTS
    for key, value in loaded.model.unet.state_dict().items():
        assert torch.equal(converted.model.unet.state_dict()[key], value)
    assert main(["convert", str(files["unet"]), "-o", str(output)]) == 1  # never replaced without --overwrite
    # A file's own defaults win; what it leaves out is MuseTalk's, not SayAnything's.
    custom = mt.convert_musetalk(files["unet"], None, tmp_path / "custom.safetensors",
                                 metadata={"defaults": json.dumps({"window": 4})})
    assert load(custom, vae=files["vae"]).defaults == MUSETALK_DEFAULTS.replace(window=4)


def test_bad_files_are_refused_naming_the_file(files, tmp_path):
    from tests.support.svd import write_tiny_svd_checkpoint

    with pytest.raises(CheckpointError, match=r"unet\.pth is a MuseTalk 1\.5 UNet, which holds no VAE.*vae-ft-mse"):
        load(files["unet"])
    svd = write_tiny_svd_checkpoint(tmp_path / "svd_xt.safetensors")
    with pytest.raises(SDVAEError, match=r"svd_xt\.safetensors holds a temporal VAE .*vae-ft-mse-840000"):
        load(files["unet"], vae=svd)
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "musetalk.json").write_text(files["config"].read_text())
    data = files["unet"].read_bytes()
    (folder / "unet.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"broken/unet\.pth .*truncated or damaged.*musetalkV15/unet\.pth"):
        load(folder / "unet.pth", vae=files["vae"])
    torch.save({"conv_in.weight": support.NotATensor()}, folder / "objects.pth")
    with pytest.raises(CheckpointError, match=r"objects\.pth: torch.load\(weights_only=True\) refused it"):
        load(folder / "objects.pth", vae=files["vae"])
    # Another UNet in upstream's layout (beside MuseTalk's musetalk.json) is named for what it is.
    sd_like = dict(support.tiny_musetalk_config(), in_channels=4, cross_attention_dim=768)
    sd_unet, sd_config, _ = support.write_upstream_musetalk(tmp_path / "sd", sd_like)
    sd_config.write_text(files["config"].read_text())
    with pytest.raises(mt.MuseTalkError, match=r"sd/unet\.pth is a Stable Diffusion .*4 input channels"):
        load(sd_unet, vae=files["vae"])
    with pytest.raises(CheckpointError, match=r"svd_xt\.safetensors is not a model file .*: SayAnything .*MuseTalk"):
        load(svd)


def test_whisper_and_inputs_it_cannot_take_are_refused_before_any_work(loaded, whisper, whisper_encoder, astronaut):
    from transformers import WhisperConfig

    frames = torch.from_numpy(astronaut)[None].float() / 255
    speech = Audio(torch.zeros(8000), 16000)
    stages = []

    def run(encoder, **extra):
        return lipsync(frames, 25.0, speech, loaded, encoder, progress=lambda *report: stages.append(report), **extra)

    with pytest.raises(mt.MuseTalkError, match=r"English-only Whisper tiny\.en.*multilingual openai/whisper-tiny"):
        run(whisper_encoder)
    wide = types.SimpleNamespace(encoder=types.SimpleNamespace(config=WhisperConfig(d_model=512, encoder_layers=6)))
    with pytest.raises(mt.MuseTalkError, match=r"d_model 512 and 6 encoder layers; MuseTalk needs Whisper tiny"):
        run(wide)
    with pytest.raises(ValueError, match=r"MuseTalk 1\.5 \(unet\.pth\) takes no mouth motion: .*SayAnything models"):
        run(whisper, motion=object())
    with pytest.raises(ValueError, match=r"takes no speaking style"):
        run(whisper, style=object())
    assert stages == []  # nothing tracked, nothing encoded
    # The crop-level Sampler chain is SayAnything's: it points to the node that runs MuseTalk.
    with pytest.raises(ValueError, match="SayAnything Lip Sync Video"):
        inference.generate(loaded, frames, frames[..., 0], torch.zeros(1, 50, 384), None, SamplerOptions(), 25.0)


# --------------------------------------------------------------------------------------------------
# The computation


def test_audio_tokens_in_pieces_are_upstreams(loaded, whisper, speech_wav, monkeypatch):
    import lipsync_core.musetalk as family
    from lipsync_core.streaming import frame_buffer

    speech = inference.load_audio(speech_wav).waveform[: 2 * 16000]
    audio = torch.zeros(31 * 16000 + 77)  # two 30 s Whisper segments, the second one second long
    audio[29 * 16000 : 29 * 16000 + speech.numel()] = speech  # speech across the segment boundary
    audio = Audio(audio, 16000)
    fps = Fraction(30000, 1001)
    frames = 31 * 30
    monkeypatch.setattr(family, "_FEATURE_CHUNK", 97)  # many pieces, edges anywhere
    reports = []
    ours = loaded.audio_features(whisper, audio, fps, frames, lambda shape, dtype: frame_buffer(shape, dtype, 1),
                                 progress=lambda done, total: reports.append((done, total)))
    expected = mt.musetalk_audio_tokens(mt.musetalk_audio_features(whisper, audio, fps, frames))
    assert reports == [(1, 2), (2, 2)]
    assert torch.equal(ours[:], expected)


def test_a_frame_is_what_upstreams_formulas_give(files, loaded, whisper, astronaut, speech_wav):
    """Upstream's choices (each frame's own crop as reference, the whole lower half): the run's edited crops are
    the MuseTalk computation on the pack's crops and tokens, and that computation is upstream's formulas on
    diffusers' own UNet and VAE."""
    upstream = loaded.with_choices(reference="own_frame", mask="lower_half")
    frames = torch.from_numpy(np.stack([np.roll(astronaut, 4 * i, axis=1) for i in range(3)])).float() / 255
    sink = Chunks()
    speech = inference.load_audio(speech_wav)
    result = dub(TensorSource(frames), speech, sink, upstream, whisper, 25, fit_mode="cut")
    (chunk,) = sink.chunks
    assert len(chunk.frames) == 3 and chunk.editable.all()
    crops = uint8_to_frames(warp_to_crop(frames, chunk.transforms, 256))
    states = mt.musetalk_whisper_states(whisper, result.audio)
    tokens = mt.musetalk_audio_tokens(mt.musetalk_audio_windows(states, 25, 3))
    ours = mt.MuseTalkModel.lipsync_crops(upstream.model, images_to_model(crops), tokens, upstream.vae)
    full = chunk.crop_masks == 1  # rows the paste-back takes from the model alone
    assert full[:, 128:].all(axis=(0, 2)).sum() > 100 and not full[:, :128].any()
    # Equal up to float rounding (batching and memory layout change the kernels' summation order).
    assert float((chunk.crops - model_to_images(ours))[full].abs().max()) < 1e-3
    expected = support.reference_crops(support.build_unet(support.tiny_musetalk_config()), support.build_vae(),
                                       crops.permute(0, 3, 1, 2), support.reference_tokens(states, 3))
    assert float((chunk.crops - expected.permute(0, 2, 3, 1))[full].abs().max()) <= 1 / 255

    # The default: one reference frame for all, and the held mask within the lower half.
    sink = Chunks()
    dub(TensorSource(frames), speech, sink, loaded, whisper, 25, fit_mode="cut", reference_index=2)
    (chunk,) = sink.chunks
    reference = images_to_model(crops[2:3]).expand(3, -1, -1, -1)
    ours = mt.MuseTalkModel.lipsync_crops(loaded.model, images_to_model(crops), tokens, loaded.vae, reference)
    full = chunk.crop_masks == 1
    assert full.any() and not (chunk.crop_masks[:, :128] > 0).any()
    assert float((chunk.crops - model_to_images(ours))[full].abs().max()) < 1e-3


def test_streaming_gives_the_in_memory_frames_and_faceless_frames_pass(tmp_path, loaded, whisper, astronaut,
                                                                       speech_wav, monkeypatch):
    captured = []
    write = VideoWriter.write
    monkeypatch.setattr(VideoWriter, "write", lambda self, frame: (captured.append(frame.copy()), write(self, frame)))
    fps = Fraction(30000, 1001)
    source = _still(astronaut, 13)
    clip = write_clip(tmp_path / "clip.mkv", source, fps)
    speech = inference.load_audio(speech_wav)
    options = SamplerOptions(decode_chunk=5)
    stages = []
    out = lipsync_file(clip, speech, tmp_path / "out.mp4", loaded, whisper, options, fit_mode="pad_silence",
                       settings=StreamSettings(spill_bytes=1),  # every buffer spilled to disk
                       progress=lambda stage, done, total: stages.append((stage.value, done, total)))
    frames, read_fps = inference.read_frames(clip)
    expected, _audio, _mask = lipsync(frames, read_fps, speech, loaded, whisper, options, fit_mode="pad_silence")
    assert len(captured) == 13
    np.testing.assert_array_equal(np.stack(captured), inference.frames_to_uint8(expected))
    for index in range(13):
        assert np.array_equal(captured[index], source[index]) == (index in NO_FACE), index
    info = probe(Path(out))
    assert info["frames"] == 13 and info["fps"] == fps
    assert info["audio_seconds"] == pytest.approx(13 / fps, abs=0.07)
    # One UNet call per 8 frames, reported as the denoising stage's progress.
    assert [entry for entry in stages if entry[0] == "denoising"] == [("denoising", 1, 2), ("denoising", 2, 2)]


# --------------------------------------------------------------------------------------------------
# The switches


def test_switches(loaded, astronaut):
    from lipsync_core.face import track_faces

    with pytest.raises(ValueError, match="reference must be one of reference_frame, own_frame"):
        loaded.with_choices(reference="same_frame")
    with pytest.raises(ValueError, match="mask must be one of held, lower_half"):
        loaded.with_choices(mask="box")
    # Box smoothing: a face that nods 3 px a frame moves the smoothed crop less than the raw one.
    track = track_faces([astronaut])
    steps = 12
    wobble = np.repeat(track.landmarks, steps, 0)
    wobble[:, :, 1] += 3.0 * (np.arange(steps) % 2)[:, None]
    moving = FaceTrack(wobble, np.ones(steps, bool), track.frame_size)
    raw, _ = loaded.with_choices(box_smoothing=0).crop_transforms(moving, 256)
    smooth, found = loaded.crop_transforms(moving, 256)
    middle = slice(4, -4)  # the ends are held by reflection
    assert found.all() and np.ptp(smooth[middle, 1, 2]) < 0.25 * np.ptp(raw[middle, 1, 2])
    # Frames without a face but with a user's mask are framed around it, as for SayAnything.
    lost = FaceTrack(wobble, np.arange(steps) != 3, track.frame_size)
    user = np.zeros((steps, *track.frame_size), np.float32)
    user[:, 300:380, 200:320] = 1
    transforms, editable = loaded.crop_transforms(lost, 256, user)
    assert editable.all() and np.isfinite(transforms).all()
    # Masks: the held mask within the lower half, or the whole lower half.
    held = torch.ones(1, 256, 256)
    held[:, :, :100] = 0
    assert torch.equal(loaded.crop_mask(held)[0, 200], torch.cat([torch.zeros(100), torch.ones(156)]))
    half = loaded.with_choices(mask="lower_half").crop_mask(torch.zeros(1, 256, 256))
    assert (half[0, :128] == 0).all() and (half[0, 128 + 16 :] == 1).all() and 0 < float(half[0, 135, 0]) < 1


def test_run_command_takes_musetalk_and_its_switches(files, astronaut, speech_wav, tmp_path, capsys, monkeypatch):
    import lipsync_core.musetalk as family
    from lipsync_core.__main__ import main
    from lipsync_core.toy.demo import DEMO_MODEL

    chosen = []
    original = family.MuseTalkLoaded.pipeline
    monkeypatch.setattr(family.MuseTalkLoaded, "pipeline", lambda self: chosen.append(self) or original(self))
    image = tmp_path / "portrait.png"
    cv2.imwrite(str(image), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    args = ["--video", str(image), "--audio", str(speech_wav), "--fps", "4", "--model", str(files["unet"]),
            "--vae", str(files["vae"]), "--whisper", str(files["whisper"]), "--audio-duration", "1"]
    output = tmp_path / "out.mp4"
    assert main(["run", *args, "-o", str(output), "--musetalk-reference", "own_frame", "--box-smoothing", "0"]) == 0
    assert capsys.readouterr().out.strip() == str(output)
    (used,) = chosen
    assert (used.reference, used.mask, used.box_smoothing) == ("own_frame", "held", 0)
    assert probe(output)["frames"] == 4
    # The switches are MuseTalk's: a SayAnything model refuses them by name.
    toy = ["--video", str(image), "--audio", str(speech_wav), "--fps", "4", "--model", str(DEMO_MODEL),
           "--whisper", str(files["whisper"]), "-o", str(tmp_path / "toy.mp4"), "--musetalk-mask", "lower_half"]
    assert main(["run", *toy]) == 2
    assert "--musetalk-mask and --box-smoothing are MuseTalk's" in capsys.readouterr().err
