"""Whisper encoder features for lip sync: loading, format conversion, seamless long-audio encoding and
per-video-frame windows.

Formats:
- a transformers Whisper folder (``config.json`` + ``model.safetensors``), the format we load;
- openai-whisper ``.pt`` checkpoints (``{"dims", "model_state_dict"}``), read with ``weights_only=True``;
- CTranslate2 ``model.bin`` folders (faster-whisper), parsed by our own reader (no ctranslate2 needed).
Both are converted to a transformers folder by :func:`convert_whisper`.

Time (ours): Whisper's mel frame ``m`` is centred on sample ``160 m`` (STFT with centre padding) and the
encoder's stride-2 convolution centres encoder frame ``j`` on mel frame ``2 j``, so encoder frame ``j``
sits at ``j / 50`` s. Video frame ``i`` is centred at ``(i + 0.5) / fps``; its window samples the encoder
states at ``centre + (k - (W - 1) / 2) / 50`` s for ``k = 0..W-1`` (linear interpolation between encoder
frames), so it is exactly centred at any fps.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..compat import make_torchvision_importable
from .fit import as_fps, frame_count
from .io import WHISPER_SAMPLE_RATE, Audio, resample

PathLike = str | Path

HOP_LENGTH = 160  # samples per mel frame (10 ms)
N_FFT = 400
ENCODER_RATE = 50  # encoder frames per second
SAMPLES_PER_ENCODER_FRAME = WHISPER_SAMPLE_RATE // ENCODER_RATE  # 320
WINDOW_MEL_FRAMES = 3000  # the encoder accepts exactly 30 s
WINDOW_ENCODER_FRAMES = WINDOW_MEL_FRAMES // 2
DEFAULT_FEATURE_WINDOW = 10

# Long audio (ours): 30 s windows every 20 s; neighbours cross-fade over 2 s in the middle of their 10 s
# overlap, so every kept encoder frame has at least 4 s of real context on both sides.
# Whisper floors the log-mel at (loudest value - 8) of the file. For silent or very quiet files that floor
# would sink far below the one speech at a normal level gets (its loudest log10 mel power is ~0.5-1.2), so
# silence would look different from the pauses in speech. The floor's top is therefore never taken below
# this level (ours); speech at normal loudness is processed exactly as Whisper does.
LOG_MEL_TOP_MIN = 0.5

WINDOW_HOP_ENCODER_FRAMES = 1000
CROSSFADE_ENCODER_FRAMES = 100

# The Whisper tokenizer's special tokens follow the text vocabulary in this order (99 languages in
# tiny..large-v2, 100 in large-v3); used when a checkpoint ships no tokenizer.
_SPECIALS_AFTER_LANGUAGES = ("translate", "transcribe", "startoflm", "startofprev", "nospeech", "notimestamps")


def _import_transformers_whisper():
    """transformers' Whisper classes, importable also where torchvision's compiled ops cannot load."""
    make_torchvision_importable()
    import transformers
    from transformers.models.whisper import modeling_whisper

    return transformers, modeling_whisper


# --------------------------------------------------------------------------------------------------
# CTranslate2 model.bin reader
# --------------------------------------------------------------------------------------------------

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def read_ctranslate2_model(path: PathLike) -> tuple[str, dict[str, np.ndarray]]:
    """Parse a CTranslate2 ``model.bin`` (binary versions 4-6) into ``(spec name, {name: array})``.

    Aliases (e.g. the tied output projection) become extra names pointing at the same array. int8
    weights are returned as stored; :func:`_ct2_dequantize` undoes the quantisation.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise ValueError(f"CTranslate2 model file not found: {path} (a faster-whisper folder holds model.bin).")
    data = memoryview(path.read_bytes())
    offset = 0

    def take(fmt: str):
        nonlocal offset
        values = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return values[0]

    def take_string() -> str:
        nonlocal offset
        length = take("H")
        text = bytes(data[offset : offset + length - 1]).decode("utf-8")
        offset += length
        return text

    try:
        version = take("I")
        if not 4 <= version <= 6:
            raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported (4-6 are).")
        spec = take_string()
        take("I")  # spec revision
        variables: dict[str, np.ndarray] = {}
        for _ in range(take("I")):
            name = take_string()
            shape = tuple(take("I") for _ in range(take("B")))
            dtype = _CT2_DTYPES.get(take("B"))
            num_bytes = take("I")
            raw = data[offset : offset + num_bytes]
            offset += num_bytes
            if dtype is None:
                raise ValueError(f"{path}: variable {name} has a data type this reader does not know.")
            if dtype == "bfloat16":
                array = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                array = np.frombuffer(raw, dtype)
            variables[name] = array.reshape(shape)
        if version >= 3:
            for _ in range(take("I")):
                alias, target = take_string(), take_string()
                variables[alias] = variables[target]
    except struct.error as error:
        raise ValueError(f"{path} is truncated or not a CTranslate2 model.bin ({error}).") from error
    return spec, variables


def _ct2_dequantize(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Float32 value of a CTranslate2 variable; int8/int16 weights are divided by their per-row ``*_scale``."""
    value = variables[name]
    if value.dtype in (np.int8, np.int16) and f"{name}_scale" in variables:
        scale = variables[f"{name}_scale"].astype(np.float32)
        return value.astype(np.float32) / scale.reshape(-1, *([1] * (value.ndim - 1)))
    return value.astype(np.float32)


def _ct2_scalar(variables: dict[str, np.ndarray], name: str, default: int) -> int:
    return int(variables[name].reshape(-1)[0]) if name in variables else default


def _ct2_whisper_to_openai(variables: dict[str, np.ndarray]) -> tuple[dict, dict[str, torch.Tensor]]:
    """CTranslate2 WhisperSpec variables -> openai-whisper dims and state dict (float32)."""

    def get(name: str) -> torch.Tensor:
        return torch.from_numpy(_ct2_dequantize(variables, name).copy())

    state: dict[str, torch.Tensor] = {}

    def linear(src: str, dst: str, bias: bool = True) -> None:
        state[f"{dst}.weight"] = get(f"{src}/weight")
        if bias:
            state[f"{dst}.bias"] = get(f"{src}/bias")

    def norm(src: str, dst: str) -> None:
        state[f"{dst}.weight"], state[f"{dst}.bias"] = get(f"{src}/gamma"), get(f"{src}/beta")

    def split_linear(src: str, dsts: tuple[str, ...]) -> None:
        # CTranslate2 fuses q/k/v (or k/v) along the output dimension; Whisper's key has no bias and
        # CTranslate2 stores zeros there.
        weights = get(f"{src}/weight").chunk(len(dsts), dim=0)
        biases = get(f"{src}/bias").chunk(len(dsts), dim=0)
        for dst, weight, bias in zip(dsts, weights, biases):
            state[f"{dst}.weight"] = weight.clone()
            if not dst.endswith(".key"):
                state[f"{dst}.bias"] = bias.clone()

    for which in ("encoder", "decoder"):
        layer = 0
        while f"{which}/layer_{layer}/ffn/linear_0/weight" in variables:
            src, dst = f"{which}/layer_{layer}", f"{which}.blocks.{layer}"
            norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
            split_linear(
                f"{src}/self_attention/linear_0", (f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value")
            )
            linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
            if which == "decoder":
                norm(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
                linear(f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
                split_linear(f"{src}/attention/linear_1", (f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"))
                linear(f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
            norm(f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
            linear(f"{src}/ffn/linear_0", f"{dst}.mlp.0")
            linear(f"{src}/ffn/linear_1", f"{dst}.mlp.2")
            layer += 1
        if layer == 0:
            raise ValueError(f"This CTranslate2 model has no {which} layers: it is not a Whisper model.")
    linear("encoder/conv1", "encoder.conv1")
    linear("encoder/conv2", "encoder.conv2")
    state["encoder.positional_embedding"] = get("encoder/position_encodings/encodings")
    norm("encoder/layer_norm", "encoder.ln_post")
    state["decoder.token_embedding.weight"] = get("decoder/embeddings/weight")
    state["decoder.positional_embedding"] = get("decoder/position_encodings/encodings")
    norm("decoder/layer_norm", "decoder.ln")

    n_audio_state = state["encoder.conv1.weight"].shape[0]
    n_text_state = state["decoder.token_embedding.weight"].shape[1]
    dims = {
        "n_mels": state["encoder.conv1.weight"].shape[1],
        "n_audio_ctx": state["encoder.positional_embedding"].shape[0],
        "n_audio_state": n_audio_state,
        "n_audio_head": _ct2_scalar(variables, "encoder/num_heads", n_audio_state // 64),
        "n_audio_layer": sum(1 for k in state if k.startswith("encoder.blocks.") and k.endswith(".mlp.0.weight")),
        "n_vocab": state["decoder.token_embedding.weight"].shape[0],
        "n_text_ctx": state["decoder.positional_embedding"].shape[0],
        "n_text_state": n_text_state,
        "n_text_head": _ct2_scalar(variables, "decoder/num_heads", n_text_state // 64),
        "n_text_layer": sum(1 for k in state if k.startswith("decoder.blocks.") and k.endswith(".mlp.0.weight")),
    }
    return dims, state


# --------------------------------------------------------------------------------------------------
# openai-whisper layout -> transformers folder
# --------------------------------------------------------------------------------------------------

_OPENAI_TO_HF_BLOCK = {
    "attn.query": "self_attn.q_proj",
    "attn.key": "self_attn.k_proj",
    "attn.value": "self_attn.v_proj",
    "attn.out": "self_attn.out_proj",
    "attn_ln": "self_attn_layer_norm",
    "cross_attn.query": "encoder_attn.q_proj",
    "cross_attn.key": "encoder_attn.k_proj",
    "cross_attn.value": "encoder_attn.v_proj",
    "cross_attn.out": "encoder_attn.out_proj",
    "cross_attn_ln": "encoder_attn_layer_norm",
    "mlp.0": "fc1",
    "mlp.2": "fc2",
    "mlp_ln": "final_layer_norm",
}
_OPENAI_TO_HF_TOP = {
    "encoder.conv1": "model.encoder.conv1",
    "encoder.conv2": "model.encoder.conv2",
    "encoder.ln_post": "model.encoder.layer_norm",
    "decoder.ln": "model.decoder.layer_norm",
    "decoder.token_embedding": "model.decoder.embed_tokens",
}


def _openai_key_to_hf(key: str) -> str:
    if key == "encoder.positional_embedding":
        return "model.encoder.embed_positions.weight"
    if key == "decoder.positional_embedding":
        return "model.decoder.embed_positions.weight"
    module, _, param = key.rpartition(".")
    if ".blocks." in module:
        which, _, rest = module.partition(".blocks.")
        index, _, sub = rest.partition(".")
        if sub in _OPENAI_TO_HF_BLOCK:
            return f"model.{which}.layers.{index}.{_OPENAI_TO_HF_BLOCK[sub]}.{param}"
    elif module in _OPENAI_TO_HF_TOP:
        return f"{_OPENAI_TO_HF_TOP[module]}.{param}"
    raise ValueError(f"Unexpected openai-whisper parameter {key!r}: is this a Whisper checkpoint?")


def _special_token_ids(n_vocab: int, tokenizer_file: Path | None) -> dict[str, int]:
    """Ids of Whisper's special tokens, read from the shipped tokenizer when there is one."""
    if tokenizer_file is not None and tokenizer_file.is_file():
        added = {t["content"]: t["id"] for t in json.loads(tokenizer_file.read_text())["added_tokens"]}
        spellings = {name: f"<|{name}|>" for name in ("endoftext", "startoftranscript", *_SPECIALS_AFTER_LANGUAGES)}
        spellings["nospeech"] = "<|nocaptions|>" if "<|nocaptions|>" in added else "<|nospeech|>"
        if all(token in added for token in spellings.values()):
            return {name: added[token] for name, token in spellings.items()}
    # Standard layout: text vocabulary, <|endoftext|>, <|startoftranscript|>, languages, then the rest.
    english_only = n_vocab < 51865
    eot = 50256 if english_only else 50257
    n_languages = 100 if n_vocab >= 51866 else 99
    ids = {"endoftext": eot, "startoftranscript": eot + 1}
    for position, name in enumerate(_SPECIALS_AFTER_LANGUAGES):
        ids[name] = eot + 2 + n_languages + position
    return ids


def _write_transformers_folder(
    dims: dict,
    state: dict[str, torch.Tensor],
    output_dir: PathLike,
    tokenizer_file: Path | None = None,
    suppress_tokens: list | None = None,
    alignment_heads: list | None = None,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write a transformers Whisper folder (config, safetensors weights, feature extractor, generation config)."""
    from safetensors.torch import save_file

    transformers, _ = _import_transformers_whisper()
    GenerationConfig, WhisperConfig = transformers.GenerationConfig, transformers.WhisperConfig
    WhisperFeatureExtractor = transformers.WhisperFeatureExtractor

    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ValueError(f"{output_dir} already exists and is not empty; choose a new folder for the converted model.")
    specials = _special_token_ids(dims["n_vocab"], tokenizer_file)
    english_only = dims["n_vocab"] < 51865
    config = WhisperConfig(
        vocab_size=dims["n_vocab"],
        num_mel_bins=dims["n_mels"],
        d_model=dims["n_audio_state"],
        encoder_layers=dims["n_audio_layer"],
        encoder_attention_heads=dims["n_audio_head"],
        encoder_ffn_dim=4 * dims["n_audio_state"],
        decoder_layers=dims["n_text_layer"],
        decoder_attention_heads=dims["n_text_head"],
        decoder_ffn_dim=4 * dims["n_text_state"],
        max_source_positions=dims["n_audio_ctx"],
        max_target_positions=dims["n_text_ctx"],
        pad_token_id=specials["endoftext"],
        bos_token_id=specials["endoftext"],
        eos_token_id=specials["endoftext"],
        decoder_start_token_id=specials["startoftranscript"],
        tie_word_embeddings=True,
        architectures=["WhisperForConditionalGeneration"],
    )
    if dims["n_audio_state"] != dims["n_text_state"]:
        raise ValueError("Whisper checkpoints with different encoder and decoder widths are not supported.")

    weights = {}
    for key, value in state.items():
        weights[_openai_key_to_hf(key)] = value.to(dtype).contiguous()

    # Written to a scratch folder next to the target and renamed at the end: never a half-written model.
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}-"))
    try:
        config.save_pretrained(tmp)
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        WhisperFeatureExtractor(feature_size=dims["n_mels"]).save_pretrained(tmp)
        generation = GenerationConfig(
            decoder_start_token_id=specials["startoftranscript"],
            bos_token_id=specials["endoftext"],
            eos_token_id=specials["endoftext"],
            pad_token_id=specials["endoftext"],
            max_length=dims["n_text_ctx"],
            no_timestamps_token_id=specials["notimestamps"],
            begin_suppress_tokens=[220, specials["endoftext"]],
            suppress_tokens=list(suppress_tokens or []),
            is_multilingual=not english_only,
            task_to_id={"transcribe": specials["transcribe"], "translate": specials["translate"]},
            alignment_heads=alignment_heads or [],
        )
        if english_only:
            generation.forced_decoder_ids = [[1, specials["notimestamps"]]]
        generation.save_pretrained(tmp)
        if tokenizer_file is not None and tokenizer_file.is_file():
            shutil.copy(tokenizer_file, tmp / "tokenizer.json")
            (tmp / "tokenizer_config.json").write_text(
                json.dumps(
                    {"tokenizer_class": "WhisperTokenizer", "model_max_length": 1024, "errors": "replace"}, indent=2
                )
            )
        if output_dir.exists():
            output_dir.rmdir()  # empty (checked above)
        tmp.rename(output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output_dir


def convert_ctranslate2_whisper(model_dir: PathLike, output_dir: PathLike) -> Path:
    """Convert a CTranslate2 / faster-whisper folder (``model.bin`` [+ ``config.json``, ``tokenizer.json``])."""
    model_dir = Path(model_dir)
    bin_path = model_dir if model_dir.is_file() else model_dir / "model.bin"
    spec, variables = read_ctranslate2_model(bin_path)
    if spec != "WhisperSpec":
        raise ValueError(f"{bin_path} holds a CTranslate2 {spec!r}, not a Whisper model (WhisperSpec).")
    dims, state = _ct2_whisper_to_openai(variables)
    extra = {}
    config_file = bin_path.parent / "config.json"
    if config_file.is_file():
        extra = json.loads(config_file.read_text())
    dtype = torch.float16 if variables["encoder/conv1/weight"].dtype == np.float16 else torch.float32
    return _write_transformers_folder(
        dims,
        state,
        output_dir,
        tokenizer_file=bin_path.parent / "tokenizer.json",
        suppress_tokens=extra.get("suppress_ids"),
        alignment_heads=extra.get("alignment_heads"),
        dtype=dtype,
    )


def convert_openai_whisper(checkpoint: PathLike, output_dir: PathLike) -> Path:
    """Convert an openai-whisper ``.pt`` checkpoint (loaded with ``weights_only=True``: no code runs)."""
    checkpoint = Path(checkpoint)
    try:
        data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for bad pickles
        raise ValueError(f"Could not read {checkpoint} as an openai-whisper checkpoint ({error}).") from error
    if not isinstance(data, dict) or "dims" not in data or "model_state_dict" not in data:
        raise ValueError(
            f"{checkpoint} is not an openai-whisper checkpoint (expected keys 'dims' and 'model_state_dict')."
        )
    state = {k: v.float() for k, v in data["model_state_dict"].items()}
    dtype = next(iter(data["model_state_dict"].values())).dtype
    return _write_transformers_folder(
        dict(data["dims"]), state, output_dir, dtype=torch.float16 if dtype == torch.float16 else torch.float32
    )


def convert_whisper(source: PathLike, output_dir: PathLike) -> Path:
    """Convert a Whisper checkpoint to a transformers folder: a ``.pt`` file, or a CTranslate2 folder / model.bin."""
    source = Path(source)
    if source.is_file() and source.suffix in (".pt", ".pth"):
        return convert_openai_whisper(source, output_dir)
    if (source.is_dir() and (source / "model.bin").is_file()) or (source.is_file() and source.name.endswith(".bin")):
        return convert_ctranslate2_whisper(source, output_dir)
    raise ValueError(
        f"Do not know how to convert {source}: expected an openai-whisper .pt file or a CTranslate2 "
        "(faster-whisper) folder with model.bin."
    )


# --------------------------------------------------------------------------------------------------
# Encoder loading and features
# --------------------------------------------------------------------------------------------------


def _read_encoder_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if files:
        state = {}
        for file in files:
            state.update(load_file(str(file)))
    elif (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"No weights in {folder}: expected model.safetensors (or pytorch_model.bin).")
    encoder = {}
    for key, value in state.items():
        for prefix in ("model.encoder.", "encoder."):
            if key.startswith(prefix):
                encoder[key[len(prefix) :]] = value
    return encoder


class WhisperAudioEncoder(torch.nn.Module):
    """Whisper's encoder with the log-mel front end; gives all hidden states at 50 Hz and per-frame windows."""

    def __init__(self, encoder: torch.nn.Module, mel_filters: np.ndarray):
        super().__init__()
        self.encoder = encoder.eval()
        self.register_buffer("mel_filters", torch.as_tensor(mel_filters, dtype=torch.float32), persistent=False)
        self.register_buffer("stft_window", torch.hann_window(N_FFT), persistent=False)

    @property
    def num_hidden_states(self) -> int:
        """L: the embeddings plus one per encoder layer."""
        return len(self.encoder.layers) + 1

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.d_model)

    @torch.no_grad()
    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """Whisper's normalised log-mel spectrogram ``[n_mels, len // 160]`` of a 16 kHz waveform.

        The dynamic-range floor (max - 8) is taken over the whole waveform, as Whisper does for a file,
        with the max never below ``LOG_MEL_TOP_MIN`` so that silence stays silence in quiet files.
        """
        waveform = waveform.to(self.stft_window.device, torch.float32)
        stft = torch.stft(waveform, N_FFT, HOP_LENGTH, window=self.stft_window, return_complex=True)
        power = stft[..., :-1].abs() ** 2
        mel = self.mel_filters.T @ power
        log_spec = torch.clamp(mel, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max().clamp(min=LOG_MEL_TOP_MIN) - 8.0)
        return (log_spec + 4.0) / 4.0

    @torch.no_grad()
    def _encode_window(self, mel: torch.Tensor) -> torch.Tensor:
        param = next(self.encoder.parameters())
        out = self.encoder(mel[None].to(param.device, param.dtype), output_hidden_states=True)
        return torch.stack(out.hidden_states, dim=0)[:, 0].float().cpu()  # [L, 1500, D]

    @torch.no_grad()
    def encode(
        self,
        audio: Audio,
        leading_silence_frames: int = 0,
        progress: Callable[[int, int], None] | None = None,
        hop: int = WINDOW_HOP_ENCODER_FRAMES,
        crossfade: int = CROSSFADE_ENCODER_FRAMES,
    ) -> torch.Tensor:
        """All hidden states ``[L, N, D]`` (float32, CPU) at 50 Hz for audio of any length.

        Encoder frame ``j`` is centred at ``j / 50 - leading_silence_frames / 50`` s of ``audio``: that many
        frames of digital silence are put before the audio so the first frames have real (silent) context.
        Audio beyond 30 s is encoded in overlapping windows blended in their overlaps (no seams).
        ``progress(done, total)`` is called after every window. ``hop`` and ``crossfade`` (encoder frames)
        set the window spacing and blend length (``hop=1500, crossfade=0`` is plain concatenation).
        """
        pieces = self.iter_encode(audio, leading_silence_frames, progress, hop, crossfade)
        return torch.cat([states for _start, states in pieces], dim=1)

    @torch.no_grad()
    def iter_encode(
        self,
        audio: Audio,
        leading_silence_frames: int = 0,
        progress: Callable[[int, int], None] | None = None,
        hop: int = WINDOW_HOP_ENCODER_FRAMES,
        crossfade: int = CROSSFADE_ENCODER_FRAMES,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """:meth:`encode` piece by piece: ``(first encoder frame, states [L, n, D])`` in order, each piece
        final once no later window reaches it, so at most one window of states is held (long audio)."""
        if not 0 < hop <= WINDOW_ENCODER_FRAMES or not 0 <= crossfade <= WINDOW_ENCODER_FRAMES - hop:
            raise ValueError(
                f"Need 0 < hop <= 1500 and 0 <= crossfade <= 1500 - hop; got hop={hop}, crossfade={crossfade}."
            )
        waveform = audio.waveform
        if audio.sample_rate != WHISPER_SAMPLE_RATE:
            waveform = resample(waveform, audio.sample_rate, WHISPER_SAMPLE_RATE)
        lead = leading_silence_frames * SAMPLES_PER_ENCODER_FRAME
        needed = lead + waveform.numel()
        num_frames = max(1, math.ceil(needed / SAMPLES_PER_ENCODER_FRAME))
        num_windows = 1 + max(0, math.ceil((num_frames - WINDOW_ENCODER_FRAMES) / hop))
        total_frames = (num_windows - 1) * hop + WINDOW_ENCODER_FRAMES
        # Past the audio comes digital silence, exactly what Whisper pads with, so the windows are filled
        # with the same silence the model was trained to see.
        padded = torch.zeros(total_frames * SAMPLES_PER_ENCODER_FRAME)
        padded[lead:needed] = waveform
        mel = self.log_mel(padded)

        ramp = (torch.arange(crossfade, dtype=torch.float32) + 0.5) / max(crossfade, 1)
        fade_start = (WINDOW_ENCODER_FRAMES - hop - crossfade) // 2
        pending_start, pending = 0, torch.zeros(self.num_hidden_states, 0, self.hidden_size)
        for index in range(num_windows):
            start = index * hop
            states = self._encode_window(mel[:, 2 * start : 2 * start + WINDOW_MEL_FRAMES])
            weight = torch.ones(WINDOW_ENCODER_FRAMES)
            if index > 0:  # fade in over the middle of the overlap with the previous window
                weight[:fade_start] = 0
                weight[fade_start : fade_start + crossfade] = ramp
            if index < num_windows - 1:  # fade out where the next window fades in
                end = hop + fade_start
                weight[end : end + crossfade] = 1 - ramp
                weight[end + crossfade :] = 0
            # Frames before pending_start are final (this window's weight is 0 there).
            skip = pending_start - start
            grow = start + WINDOW_ENCODER_FRAMES - pending_start - pending.shape[1]
            pending = torch.cat([pending, pending.new_zeros(pending.shape[0], grow, pending.shape[2])], dim=1)
            pending += states[:, skip:] * weight[None, skip:, None]
            final_end = (index + 1) * hop + fade_start if index < num_windows - 1 else total_frames
            count = final_end - pending_start
            yield pending_start, pending[:, :count]
            pending, pending_start = pending[:, count:], final_end
            if progress is not None:
                progress(index + 1, num_windows)

    @torch.no_grad()
    def frame_features(
        self,
        audio: Audio,
        fps: float | Fraction | str,
        num_frames: int | None = None,
        window: int = DEFAULT_FEATURE_WINDOW,
        progress: Callable[[int, int], None] | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-video-frame features ``float32 [T, L, W, D]`` (see the module docstring for the timing).

        ``num_frames`` defaults to the frames that fit in the audio at ``fps``; frames past the end of
        the audio get the features of silence. ``out`` (``[T, L, W, D]``, e.g. memory-mapped) receives
        the features as the encoder goes, so long audio never holds more than one window of encoder
        states besides it.
        """
        fps = as_fps(fps)
        if num_frames is None:
            num_frames = frame_count(audio.num_samples, audio.sample_rate, fps)
        if num_frames <= 0:
            raise ValueError("frame_features needs at least one video frame (the audio is shorter than one frame).")
        if window < 1:
            raise ValueError(f"window must be >= 1 encoder frames, got {window}.")
        lead = window // 2 + 2
        # Encode through the end of the last frame's window so it is real silence, not padding.
        end_time = Fraction(num_frames, 1) / fps + Fraction(window, ENCODER_RATE)
        end_samples = int(math.ceil(end_time * audio.sample_rate))
        waveform = audio.waveform[:end_samples]
        if waveform.numel() < end_samples:
            waveform = torch.nn.functional.pad(waveform, (0, end_samples - waveform.numel()))
        shape = (num_frames, self.num_hidden_states, window, self.hidden_size)
        if out is None:
            out = torch.empty(shape, dtype=torch.float32)
        elif tuple(out.shape) != shape:
            raise ValueError(f"out must be {list(shape)}, got {list(out.shape)}")
        low, high, frac = window_positions(fps, num_frames, window, frame_offset=lead)
        last_needed = high.max(dim=1).values  # per frame: the last encoder frame its window reads
        held_start, held = 0, []  # encoder states from held_start on, as [n, L, D] pieces
        done = 0
        pieces = self.iter_encode(Audio(waveform, audio.sample_rate), leading_silence_frames=lead, progress=progress)
        for _start, states in pieces:
            held.append(states.permute(1, 0, 2))
            by_time = torch.cat(held)
            held_end = held_start + by_time.shape[0]  # states [held_start, held_end) are final
            ready = int(torch.searchsorted(last_needed, torch.tensor([held_end - 1]), right=True))
            if ready > done:
                out[done:ready] = _gather_windows(
                    by_time, low[done:ready] - held_start, high[done:ready] - held_start, frac[done:ready]
                )
                done = ready
            # Keep only what the remaining frames still read.
            keep_from = int(low[done:].min()) if done < num_frames else held_end
            keep_from = min(max(keep_from, held_start), held_end)
            held, held_start = [by_time[keep_from - held_start :]], keep_from
        if done < num_frames:  # frames reading past the encoded end: clamped to its last frame
            by_time = torch.cat(held)
            last = held_start + by_time.shape[0] - 1
            out[done:] = _gather_windows(
                by_time, low[done:].clamp(max=last) - held_start, high[done:].clamp(max=last) - held_start, frac[done:]
            )
        return out


def window_positions(
    fps: float | Fraction | str, num_frames: int, window: int = DEFAULT_FEATURE_WINDOW, frame_offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where video frame ``i``'s window samples the 50 Hz states: ``(low, high, frac)``, each ``[T, W]``.

    Window ``k`` of frame ``i`` samples time ``(i + 0.5) / fps + (k - (W - 1) / 2) / 50`` s, i.e. encoder
    frame ``low + frac`` (``high = low + 1``) with frame ``j`` at ``(j - frame_offset) / 50`` s.
    """
    fps = as_fps(fps)
    # Exact rational centres, one per frame (never accumulated), then float64 positions in encoder frames.
    centres = torch.tensor(
        [float(Fraction(2 * i + 1, 2) / fps * ENCODER_RATE) for i in range(num_frames)], dtype=torch.float64
    )
    positions = (
        centres[:, None] + frame_offset + (torch.arange(window, dtype=torch.float64) - (window - 1) / 2)[None, :]
    )
    positions = positions.clamp(min=0)
    low = positions.floor().long()
    return low, low + 1, (positions - low).float()


def _gather_windows(by_time: torch.Tensor, low: torch.Tensor, high: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
    """``[F, L, W, D]`` by linear interpolation of states ``by_time [N, L, D]`` at ``low + frac`` (indices
    past the end are clamped to the last state)."""
    num_frames, window = low.shape
    last = by_time.shape[0] - 1
    low, high = low.clamp(0, last), high.clamp(0, last)
    out = by_time[low.reshape(-1)]
    out.lerp_(by_time[high.reshape(-1)], frac.reshape(-1, 1, 1))
    return out.view(num_frames, window, *by_time.shape[1:]).permute(0, 2, 1, 3).contiguous()


def frame_windows(
    hidden: torch.Tensor,
    fps: float | Fraction | str,
    num_frames: int,
    window: int = DEFAULT_FEATURE_WINDOW,
    frame_offset: int = 0,
) -> torch.Tensor:
    """Cut ``[T, L, W, D]`` windows from 50 Hz hidden states ``[L, N, D]``; frame ``j`` is at
    ``(j - frame_offset) / 50`` s.

    Window ``k`` of video frame ``i`` samples time ``(i + 0.5) / fps + (k - (W - 1) / 2) / 50`` by linear
    interpolation; positions outside ``[0, N - 1]`` are clamped to the edge.
    """
    low, high, frac = window_positions(fps, num_frames, window, frame_offset)
    return _gather_windows(hidden.permute(1, 0, 2).contiguous(), low, high, frac)


def load_whisper_encoder(
    path: PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> WhisperAudioEncoder:
    """Load the encoder of a transformers Whisper folder (any size; the decoder is not loaded).

    Convert other formats first with :func:`convert_whisper`.
    """
    transformers, modeling_whisper = _import_transformers_whisper()
    WhisperConfig, WhisperFeatureExtractor = transformers.WhisperConfig, transformers.WhisperFeatureExtractor
    WhisperEncoder = modeling_whisper.WhisperEncoder

    folder = Path(path)
    if not (folder / "config.json").is_file():
        hint = ""
        if folder.is_file() and folder.suffix in (".pt", ".pth", ".bin") or (folder / "model.bin").is_file():
            hint = " It looks like an openai-whisper or CTranslate2 checkpoint: convert it with convert_whisper()."
        raise ValueError(
            f"{folder} is not a transformers Whisper folder (no config.json). Expected config.json and "
            f"model.safetensors, e.g. a copy of openai/whisper-tiny in ComfyUI's models/whisper folder.{hint}"
        )
    config = WhisperConfig.from_pretrained(folder)
    state = _read_encoder_state(folder)
    with torch.device("meta"):  # no random initialisation of weights that are loaded next
        encoder = WhisperEncoder(config)
    expected = set(encoder.state_dict())
    missing = sorted(expected - set(state))
    if missing:
        raise ValueError(
            f"{folder}: the Whisper encoder weights are incomplete (missing {', '.join(missing[:4])}"
            f"{'...' if len(missing) > 4 else ''}). Is this a Whisper model folder?"
        )
    encoder.load_state_dict({k: state[k] for k in expected}, assign=True)
    encoder = encoder.to(device=device, dtype=dtype).eval()
    if (folder / "preprocessor_config.json").is_file():
        extractor = WhisperFeatureExtractor.from_pretrained(folder)
    else:
        extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    return WhisperAudioEncoder(encoder, extractor.mel_filters).to(device)
