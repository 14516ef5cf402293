"""MuseTalk 1.5 family: loading upstream files, the audio front end, the crop rule, bad inputs.

The references below are written here from upstream's formulas (TMElyralab/MuseTalk: ``musetalk/models/unet.py``
PositionalEncoding, ``musetalk/utils/audio_processor.py`` get_whisper_chunk, ``musetalk/models/vae.py``,
``scripts/inference.py``) on diffusers' own ``UNet2DConditionModel`` and ``AutoencoderKL``, without the code
under test. Our one deliberate difference: VAE latents are the posterior mean unless a generator is given.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import time
from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder
from safetensors import safe_open
from safetensors.torch import save_file

from lipsync_core.audio import Audio, load_audio, load_whisper_encoder
from lipsync_core.face import FaceTrack, track_faces, warp_to_crop
from lipsync_core.face.align import transform_points
from lipsync_core.face.box_crop import (
    MEDIAPIPE_68,
    box_transforms,
    landmarks_68,
    musetalk_boxes,
    musetalk_crop_transforms,
)
from lipsync_core.face.track import CHIN, EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT, LIPS_INNER, LIPS_OUTER
from lipsync_core.models import musetalk as mt
from lipsync_core.models.sd_vae import SDVAEError, load_sd_vae
from tests.support import musetalk as support
from tests.support.musetalk import reference_crops, reference_position_encoding, reference_tokens

FULL_PARAMS = 849_947_844
FULL_TENSORS = 686
# Published sizes of the fp32 pickles (v1 pytorch_model.bin: its Hugging Face LFS pointer).
PUBLISHED_V1_BYTES = 3_400_076_549


# --------------------------------------------------------------------------------------------------
# Numerical parity
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream_tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("musetalk")
    unet_path, config_path, reference_unet = support.write_upstream_musetalk(folder)
    return unet_path, config_path, reference_unet


def test_upstream_unet_file_gives_diffusers_output(upstream_tiny):
    unet_path, config_path, reference_unet = upstream_tiny
    model = mt.MuseTalkModel.from_upstream(unet_path, config_path)
    generator = torch.Generator().manual_seed(0)
    masked, reference = torch.randn(2, 2, 4, 32, 32, generator=generator)
    tokens = torch.randn(2, 50, 384, generator=generator)
    ours = model.lipsync_latents(masked, reference, tokens)
    with torch.no_grad():
        expected = reference_unet(torch.cat([masked, reference], 1), torch.tensor([0]), encoder_hidden_states=tokens)
    assert float((ours - expected.sample).abs().max()) < 1e-5
    # musetalk.json next to the weights is found without being named.
    assert mt.load_musetalk_unet(unet_path).config.block_out_channels == reference_unet.config.block_out_channels


def test_crop_end_to_end_matches_upstream_formulas(upstream_tiny, tmp_path):
    unet_path, config_path, reference_unet = upstream_tiny
    vae = support.build_vae()
    vae_file = support.write_ldm_vae(vae, tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors")
    model = mt.MuseTalkModel.from_upstream(unet_path, config_path)
    loaded_vae = load_sd_vae(vae_file)

    generator = torch.Generator().manual_seed(1)
    states = torch.randn(5, 9, 384, generator=generator)  # 0.18 s of audio: the last frames read the zero padding
    crops01 = torch.rand(2, 3, 256, 256, generator=generator)
    tokens = mt.musetalk_audio_tokens(mt.musetalk_audio_windows(states, 25, 3))
    expected_tokens = reference_tokens(states, 3)
    # Upstream computes the encoding in float32 (angles rounded: up to 3e-6 off); ours rounds exact values.
    assert float((tokens - expected_tokens).abs().max()) < 1e-5

    ours = (model.lipsync_crops(crops01 * 2 - 1, tokens[1:], loaded_vae) + 1) / 2
    expected = reference_crops(reference_unet, vae, crops01, expected_tokens[1:])
    assert float((ours - expected).abs().max()) <= 1 / 255

    # Upstream's sampling, seeded: the same draws in the same order (masked crop first).
    small = crops01[:, :, :64, :64]
    ours = model.lipsync_crops(small * 2 - 1, tokens[1:], loaded_vae, generator=torch.Generator().manual_seed(5))
    expected = reference_crops(reference_unet, vae, small, expected_tokens[1:], torch.Generator().manual_seed(5))
    assert float(((ours + 1) / 2 - expected).abs().max()) <= 1 / 255
    mean = reference_crops(reference_unet, vae, small, expected_tokens[1:])
    assert float((mean - expected).abs().max()) > 1e-4  # the generator is used


def test_full_width_unet_on_16x16_latents():
    start = time.perf_counter()
    reference_unet = support.build_unet(mt.UNET_PRESETS["full"], seed=3)
    state = reference_unet.state_dict()
    unet = mt.musetalk_unet_from_state_dict(state, "full", source="full-size state dict")
    model = mt.MuseTalkModel(unet)
    generator = torch.Generator().manual_seed(2)
    masked, reference = torch.randn(2, 1, 4, 16, 16, generator=generator)
    tokens = torch.randn(1, 50, 384, generator=generator)
    ours = model.lipsync_latents(masked, reference, tokens)
    with torch.no_grad():
        expected = reference_unet(torch.cat([masked, reference], 1), torch.tensor([0]), encoder_hidden_states=tokens)
    assert float((ours - expected.sample).abs().max()) < 1e-5
    assert time.perf_counter() - start < 60  # ~10 s on the 2-core CI machine; a regression would show here


# --------------------------------------------------------------------------------------------------
# Key and size inventory
# --------------------------------------------------------------------------------------------------


def test_full_size_inventory_consumes_every_key_once():
    config = mt.MuseTalkConfig.preset("full")
    with torch.device("meta"):
        upstream = support.build_unet(dict(mt.UNET_PRESETS["full"])).state_dict()
    expected = mt.check_musetalk_state_dict(upstream, config, "meta state dict")
    assert list(expected) == list(upstream) and len(expected) == FULL_TENSORS
    assert all(expected[key] == tuple(value.shape) for key, value in upstream.items())
    params = sum(math.prod(shape) for shape in expected.values())
    assert params == FULL_PARAMS and 4 * params == 3_399_791_376
    assert 0 < PUBLISHED_V1_BYTES - 4 * params < 1_000_000  # the rest is pickle and zip overhead (686 records)
    # Facts of the released UNet: 8 input channels, 384-wide audio context, 8 heads at every level.
    assert expected["conv_in.weight"] == (320, 8, 3, 3) and expected["conv_out.weight"] == (4, 320, 3, 3)
    assert expected["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"] == (1280, 384)
    with torch.device("meta"):
        unet = config.build_unet()
    heads = {module.heads for name, module in unet.named_modules() if name.endswith(("attn1", "attn2"))}
    assert heads == {8}


# --------------------------------------------------------------------------------------------------
# Audio front end
# --------------------------------------------------------------------------------------------------


def test_window_indices_are_integer_exact():
    indices = mt.musetalk_window_indices(1000, 25)
    assert indices.dtype == torch.int64 and indices.shape == (1000, 10)
    assert torch.equal(indices, torch.tensor([list(range(2 * i - 4, 2 * i + 6)) for i in range(1000)]))
    for fps, exact in ((24, Fraction(24)), (29.97, Fraction(30000, 1001)), (30, Fraction(30))):
        starts = mt.musetalk_window_indices(3000, fps)[:, 0].tolist()
        assert starts == [(50 * i * exact.denominator) // exact.numerator - 4 for i in range(3000)]
    assert torch.equal(mt.musetalk_window_indices(7, "30000/1001"), mt.musetalk_window_indices(7, 29.97))
    # Upstream's own arithmetic: fps truncated to an integer, float floor, left pad 2 * ceil(50 / fps).
    assert mt.musetalk_window_indices(50, 24, match_upstream=True)[:, 0].tolist() == [
        math.floor(i * (50 / 24)) - 6 for i in range(50)
    ]
    assert mt.musetalk_window_indices(50, 29.97, match_upstream=True)[:, 0].tolist() == [
        math.floor(i * (50 / 29)) - 4 for i in range(50)
    ]
    assert torch.equal(mt.musetalk_window_indices(200, 25, match_upstream=True), indices[:200])


def test_windows_are_time_major_and_zero_outside_the_audio():
    layers, length, dim = 5, 30, 4
    states = torch.arange(layers * length * dim, dtype=torch.float32).reshape(layers, length, dim) + 1
    windows = mt.musetalk_audio_windows(states, 25, 20)
    assert windows.shape == (20, 10, 5, 4)
    for i in (0, 1, 7, 14, 19):
        for w in range(10):
            frame = 2 * i - 4 + w
            want = states[:, frame] if 0 <= frame < length else torch.zeros(layers, dim)
            assert torch.equal(windows[i, w], want)
    tokens = mt.musetalk_audio_tokens(windows)
    assert tokens.shape == (20, 50, 4)
    pe = reference_position_encoding(50, 4)
    for i, w, layer in ((7, 3, 2), (0, 0, 0), (19, 9, 4)):  # token w * 5 + layer holds layer `layer` of frame w
        assert float((tokens[i, w * 5 + layer] - windows[i, w, layer] - pe[w * 5 + layer]).abs().max()) < 1e-4


def test_position_encoding_formula():
    ours = mt.sinusoidal_position_encoding(50, 384)
    def value(p, d):
        return (math.sin if d % 2 == 0 else math.cos)(p / 10000 ** ((d - d % 2) / 384))

    exact = torch.tensor([[value(p, d) for d in range(384)] for p in range(50)])
    assert ours.shape == (50, 384) and ours.dtype == torch.float32
    assert float((ours - exact).abs().max()) < 1e-6
    assert float((ours - reference_position_encoding(50, 384)).abs().max()) < 1e-5


def test_english_only_and_other_width_whisper_refused(whisper_encoder):
    from transformers import WhisperConfig

    with pytest.raises(mt.MuseTalkError, match=r"English-only Whisper tiny.en \(vocabulary 51864\)"):
        mt.check_musetalk_whisper(whisper_encoder)
    with pytest.raises(mt.MuseTalkError, match="d_model 512"):
        mt.check_musetalk_whisper(WhisperConfig(d_model=512, encoder_layers=6, vocab_size=51865))
    mt.check_musetalk_whisper(WhisperConfig(d_model=384, encoder_layers=4, vocab_size=51865))
    with pytest.raises(mt.MuseTalkError, match="multilingual openai/whisper-tiny"):
        mt.musetalk_whisper_states(whisper_encoder, Audio(torch.zeros(16000), 16000))


def test_whisper_states_match_transformers_per_30s_segment(whisper_tiny_dir, whisper_encoder, speech_wav):
    from transformers import WhisperFeatureExtractor

    speech = load_audio(speech_wav).waveform
    # 40 s: loud speech in the first 30 s segment, speech 20 dB quieter in the second.
    long = torch.zeros(40 * 16000)
    long[5 * 16000 : 5 * 16000 + speech.numel()] = speech
    long[33 * 16000 : 33 * 16000 + speech.numel()] = 0.1 * speech
    extractor = WhisperFeatureExtractor(feature_size=80)

    def hf_mel(segment):
        return extractor(segment.numpy(), sampling_rate=16000, return_tensors="pt").input_features[0]

    for waveform in (speech, 0.01 * speech, long[480000:]):
        ours = mt.whisper_log_mel_30s(waveform, whisper_encoder.mel_filters, whisper_encoder.stft_window)
        assert float((ours - hf_mel(waveform)).abs().max()) < 1e-5
    # The pack's log-mel floors at the whole file's loudest value (never below 0.5): other features on quiet
    # audio and on a quieter second segment (measured: 0.625 and 0.5 in normalised log-mel units).
    padded = torch.zeros(480000)
    padded[: speech.numel()] = 0.01 * speech
    assert float((whisper_encoder.log_mel(padded) - hf_mel(0.01 * speech)).abs().max()) > 0.5

    # A stand-in multilingual tiny: the tiny.en weights under a multilingual vocabulary size (same computation).
    encoder = load_whisper_encoder(whisper_tiny_dir)
    encoder.encoder.config.vocab_size = 51865
    ours = mt.musetalk_whisper_states(encoder, Audio(long, 16000))
    with torch.no_grad():
        pieces = [encoder.encoder(hf_mel(long[s : s + 480000])[None], output_hidden_states=True) for s in (0, 480000)]
    expected = torch.cat([torch.stack(p.hidden_states)[:, 0] for p in pieces], dim=1)[:, : long.numel() // 320]
    assert ours.shape == (5, 2000, 384)
    assert float((ours - expected).abs().max()) < 1e-4
    windows = mt.musetalk_audio_features(encoder, Audio(long, 16000), 25)
    assert windows.shape == (1000, 10, 5, 384)


# --------------------------------------------------------------------------------------------------
# Files: conversion, identity, bad input
# --------------------------------------------------------------------------------------------------


def test_convert_to_safetensors_and_back(upstream_tiny, tmp_path):
    unet_path, config_path, reference_unet = upstream_tiny
    output = mt.convert_musetalk(unet_path, config_path, tmp_path / "musetalk.safetensors")
    assert not list(tmp_path.glob("*.partial"))
    with safe_open(str(output), "pt") as handle:
        metadata = handle.metadata()
        assert all(key.startswith("unet.") for key in handle.keys())
    assert metadata["format"] == "musetalk" and metadata["format_version"] == "1"
    assert json.loads(metadata["config"]) == support.tiny_musetalk_config()
    model = mt.load_musetalk_safetensors(output)
    for key, value in reference_unet.state_dict().items():
        assert torch.equal(model.unet.state_dict()[key], value)
    with pytest.raises(FileExistsError):
        mt.convert_musetalk(unet_path, config_path, output)
    with pytest.raises(mt.MuseTalkError, match="load_musetalk_safetensors"):
        mt.load_musetalk_unet(output, config_path)
    half = mt.convert_musetalk(unet_path, config_path, tmp_path / "half.safetensors", dtype=torch.float16)
    assert mt.load_musetalk_safetensors(half).dtype == torch.float16


def test_interrupted_conversion_leaves_no_file(upstream_tiny, tmp_path, monkeypatch):
    import safetensors.torch

    def fail(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    unet_path, config_path, _ = upstream_tiny
    with pytest.raises(OSError, match="disk full"):
        mt.convert_musetalk(unet_path, config_path, tmp_path / "out.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_file_identity_is_hashed_on_request(tmp_path, monkeypatch):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"musetalk" * 1000)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert mt.file_sha256(path, chunk_mib=1) == digest
    assert mt.identify_file(path) is None
    known = mt.KnownFile("weights.bin", path.stat().st_size, "test", "musetalk-unet")
    monkeypatch.setitem(mt.KNOWN_FILES, digest, known)
    assert mt.identify_file(path) == known
    assert all(len(key) == 64 and int(key, 16) >= 0 for key in mt.KNOWN_FILES)


def test_truncated_unet_file(upstream_tiny, tmp_path):
    data = upstream_tiny[0].read_bytes()
    truncated = tmp_path / "unet.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(mt.MuseTalkError, match=r"unet\.pth .*truncated or damaged.*Download it again"):
        mt.load_musetalk_unet(truncated, upstream_tiny[1])
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(mt.MuseTalkError, match=r"empty\.pth is empty"):
        mt.load_musetalk_unet(tmp_path / "empty.pth", upstream_tiny[1])


def test_pickle_holding_objects_is_refused(upstream_tiny, tmp_path):
    custom = tmp_path / "custom.pth"
    torch.save({"conv_in.weight": support.NotATensor()}, custom)
    refused = r"custom\.pth: torch.load\(weights_only=True\) refused it .*Python objects"
    with pytest.raises(mt.MuseTalkError, match=refused):
        mt.load_musetalk_unet(custom, upstream_tiny[1])
    # torch's weights_only allows a Counter (a dict subclass); it is still not a state dict of tensors.
    counter = tmp_path / "counter.pth"
    torch.save(collections.Counter(a=1), counter)
    with pytest.raises(mt.MuseTalkError, match=r"counter\.pth holds a collections\.Counter, not a state dict"):
        mt.load_musetalk_unet(counter, upstream_tiny[1])
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": torch.load(upstream_tiny[0], weights_only=True), "epoch": 3}, wrapped)
    with pytest.raises(mt.MuseTalkError, match=r"wrapped\.pth .*wrapped under \['state_dict'\]"):
        mt.load_musetalk_unet(wrapped, upstream_tiny[1])


def test_other_families_and_wrong_keys_are_named(upstream_tiny, tmp_path):
    sd_like = dict(support.tiny_musetalk_config(), in_channels=4, cross_attention_dim=768)
    sd_path, _, _ = support.write_upstream_musetalk(tmp_path / "sd", sd_like)
    named = r"sd/unet\.pth is a Stable Diffusion .*4 input channels.*musetalkV15/unet\.pth"
    with pytest.raises(mt.MuseTalkError, match=named):
        mt.load_musetalk_unet(sd_path, upstream_tiny[1])
    state = torch.load(upstream_tiny[0], weights_only=True)
    del state["conv_out.bias"]
    torch.save(state, tmp_path / "incomplete.pth")
    with pytest.raises(mt.MuseTalkError, match=r"incomplete\.pth does not hold .*1 missing \(e\.g\. conv_out\.bias\)"):
        mt.load_musetalk_unet(tmp_path / "incomplete.pth", upstream_tiny[1])
    with pytest.raises(mt.MuseTalkError, match=r"unet\.pth does not hold MuseTalk's UNet for MuseTalk preset 'full'"):
        mt.load_musetalk_unet(upstream_tiny[0], "full")
    wider = dict(support.tiny_musetalk_config(), block_out_channels=[64, 128])
    with pytest.raises(mt.MuseTalkError, match=r"unet\.pth: \d+ tensors have other shapes .*musetalk\.json"):
        mt.load_musetalk_unet(upstream_tiny[0], wider)
    with pytest.raises(mt.MuseTalkError, match="in_channels 4"):
        mt.MuseTalkConfig.from_dict(sd_like, source="sd.json")


def test_sd_vae_loads_from_single_file_and_folders(tmp_path):
    vae = support.build_vae()
    expected = vae.state_dict()
    single = load_sd_vae(support.write_ldm_vae(vae, tmp_path / "vae.safetensors"))
    prefixed = load_sd_vae(support.write_ldm_vae(vae, tmp_path / "prefixed.safetensors", "first_stage_model."))
    folder = tmp_path / "sd-vae-ft-mse"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"} | support.TINY_VAE_CONFIG))
    weights = {key: value.contiguous() for key, value in expected.items()}
    save_file(weights, folder / "diffusion_pytorch_model.safetensors")
    from_folder = load_sd_vae(folder)
    # An old diffusers .bin names the attention query/key/value/proj_attn.
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text((folder / "config.json").read_text())
    renames = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    legacy = {}
    for key, value in expected.items():
        for new, previous in renames.items():
            key = key.replace(new, previous)
        legacy[key] = value
    torch.save(legacy, old / "diffusion_pytorch_model.bin")
    from_bin = load_sd_vae(old)
    for loaded in (single, prefixed, from_folder, from_bin):
        assert isinstance(loaded, AutoencoderKL)
        assert all(torch.equal(loaded.state_dict()[key], value) for key, value in expected.items())


def test_vae_of_another_family_is_refused(tmp_path):
    from tests.support.svd import write_tiny_svd_checkpoint

    svd = write_tiny_svd_checkpoint(tmp_path / "svd_xt.safetensors")
    with pytest.raises(SDVAEError, match=r"svd_xt\.safetensors holds a temporal VAE .*vae-ft-mse-840000"):
        load_sd_vae(svd)
    temporal = AutoencoderKLTemporalDecoder(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2)
    save_file({k: v.contiguous() for k, v in temporal.state_dict().items()}, tmp_path / "temporal.safetensors")
    with pytest.raises(SDVAEError, match=r"temporal\.safetensors holds a temporal VAE"):
        load_sd_vae(tmp_path / "temporal.safetensors")
    flux_like = support.build_vae(dict(support.TINY_VAE_CONFIG, latent_channels=16))
    with pytest.raises(SDVAEError, match=r"flux\.safetensors is a VAE with 16 latent channels"):
        load_sd_vae(support.write_ldm_vae(flux_like, tmp_path / "flux.safetensors"))
    sdxl = tmp_path / "sdxl-vae"
    sdxl.mkdir()
    (sdxl / "config.json").write_text(json.dumps(dict(support.TINY_VAE_CONFIG, scaling_factor=0.13025)))
    with pytest.raises(SDVAEError, match=r"sdxl-vae: scaling factor 0\.13025 \(the SDXL VAE's\)"):
        load_sd_vae(sdxl)


# --------------------------------------------------------------------------------------------------
# Crop rule
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def astronaut_track(astronaut):
    return track_faces([astronaut])


def test_crop_box_holds_mouth_and_chin_in_its_lower_half(astronaut, astronaut_track):
    transforms, found = musetalk_crop_transforms(astronaut_track)
    assert found.tolist() == [True] and transforms.shape == (1, 2, 3) and transforms.dtype == np.float32
    points = transform_points(astronaut_track.landmarks, transforms)[0]
    mouth = points[list(LIPS_OUTER + LIPS_INNER)]
    chin = points[CHIN]
    assert (mouth >= 0).all() and (mouth <= 255).all() and (mouth[:, 1] > 128).all()
    assert 128 < chin[1] < 255 and 0 < chin[0] < 255
    # The box is mirrored about the nose bridge: the chin sits 10 px (stretched) above the bottom edge.
    # (The lowest point, pixel row y2 - 1 - 10 of upstream's frame[y1:y2], lands 9.5 stretched rows up.)
    assert abs(chin[1] - (255.5 - 9.5 * transforms[0, 1, 1])) < 0.05
    eyes = points[list(EYE_IMAGE_LEFT + EYE_IMAGE_RIGHT)]
    assert (eyes[:, 1] < 128).all()
    # The 68 points' x extent spans the crop as upstream's frame[y1:y2, x1:x2] with x1 = min x, x2 = max x.
    assert len(set(MEDIAPIPE_68)) == 68
    scale_x = transforms[0, 0, 0]
    extent = points[list(MEDIAPIPE_68), 0]
    assert abs(extent.min() - (0.5 * scale_x - 0.5)) < 1e-3
    assert abs(landmarks_68(points)[:, 0].max() - (255.5 + 0.5 * scale_x)) < 1e-3


def test_crop_size_tracks_the_face_size(astronaut, astronaut_track):
    scaled = cv2.resize(astronaut, (768, 768), interpolation=cv2.INTER_CUBIC)
    boxes, _ = musetalk_boxes(astronaut_track, extra_margin=0)
    boxes_scaled, _ = musetalk_boxes(track_faces([scaled]), extra_margin=0)
    width, height = boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1]
    width_scaled, height_scaled = boxes_scaled[0, 2] - boxes_scaled[0, 0], boxes_scaled[0, 3] - boxes_scaled[0, 1]
    assert abs(width_scaled / width - 1.5) < 0.04 and abs(height_scaled / height - 1.5) < 0.04


def test_box_transform_matches_cv2_resize_of_the_box(astronaut):
    x1, y1, x2, y2 = 180, 70, 276, 190  # frame[y1:y2, x1:x2] as upstream cuts it
    transforms = box_transforms(np.array([[x1, y1, x2, y2]], float), 256)
    ours = warp_to_crop([astronaut], transforms, 256)[0].astype(int)
    resized = cv2.resize(astronaut[y1:y2, x1:x2], (256, 256), interpolation=cv2.INTER_LINEAR).astype(int)
    difference = np.abs(ours - resized)[2:-2, 2:-2]  # both bilinear; their fixed-point rounding differs
    assert difference.max() <= 3 and difference.mean() < 0.3


def test_frames_without_face_and_the_smoothing_switch(astronaut_track):
    landmarks = astronaut_track.landmarks[0]
    steps = 50
    # A jaw opening 0-8 px at 6 Hz (25 fps): every point below the nose tip moves down in proportion.
    lower = landmarks[:, 1] > landmarks[1, 1]
    drop = 8.0 * (0.5 - 0.5 * np.cos(2 * np.pi * 6.0 * np.arange(steps) / 25))
    moving = np.repeat(landmarks[None], steps, 0)
    share = (landmarks[lower, 1] - landmarks[1, 1]) / (landmarks[CHIN, 1] - landmarks[1, 1])
    moving[:, lower, 1] += drop[:, None] * share
    found = np.ones(steps, bool)
    found[[0, 20, 21]] = False
    track = FaceTrack(moving, found, astronaut_track.frame_size)
    transforms, box_found = musetalk_crop_transforms(track)
    assert np.isfinite(transforms).all() and box_found.tolist() == found.tolist()
    raw, _ = musetalk_boxes(track, temporal_sigma=0)
    smooth, _ = musetalk_boxes(track)
    middle = slice(25, 45)
    raw_range = np.ptp(raw[middle, 3] - raw[middle, 1])
    smooth_range = np.ptp(smooth[middle, 3] - smooth[middle, 1])
    assert raw_range > 12  # unsmoothed, the box height follows the chin twice (mirrored top)
    assert smooth_range < 0.2 * raw_range
    with pytest.raises(ValueError, match="No face was found"):
        musetalk_crop_transforms(FaceTrack(moving, np.zeros(steps, bool), astronaut_track.frame_size))
