"""Real speech for the toy world: espeak-ng sentences and the mouth opening they imply.

The opening is derived from the waveform alone (a smoothed band-energy envelope), so the only way a
model can reproduce it is by listening to the audio.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000

# Short, phonetically varied sentences (ours). The last ones are held out for evaluation.
SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.",
    "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.",
    "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.",
    "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.",
    "What joy there is in living.",
    "A king ruled the state in the early days.",
    "The ship was torn apart on the sharp reef.",
    "Sickness kept him home the third week.",
    "The wide road shimmered in the hot sun.",
    "The lazy cow lay in the cool grass.",
    "Lift the square stone over the fence.",
    "The rope will bind the seven books at once.",
    "Hop over the fence and plunge in.",
    "The friendly gang left the drug store.",
)
HELD_OUT_SENTENCES = 8

VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb+f2", "en-us+m3", "en-029", "en-gb-scotland", "en-us-nyc+f4")
SPEEDS = (135, 155, 175, 195)


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"The toy world needs `{tool}` on PATH (Debian: apt-get install espeak-ng sox).")
    return path


def speak(text: str, voice: str, speed: int) -> np.ndarray:
    """espeak-ng speech as float32 mono at 16 kHz, leading/trailing silence trimmed."""
    espeak, sox = _require("espeak-ng"), _require("sox")
    with tempfile.TemporaryDirectory() as tmp:
        raw, resampled = Path(tmp) / "raw.wav", Path(tmp) / "16k.wav"
        subprocess.run([espeak, "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True, capture_output=True)
        subprocess.run(
            [sox, "-D", "-R", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(resampled)],
            check=True,
            capture_output=True,
        )
        with wave.open(str(resampled), "rb") as handle:
            samples = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16)
    audio = samples.astype(np.float32) / 32768.0
    loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    audio = audio[loud[0]: loud[-1] + 1]
    return audio / max(np.abs(audio).max(), 1e-6) * 0.7


@dataclass
class Utterance:
    """A clip's soundtrack: speech segments separated by silence, with per-frame mouth targets."""

    waveform: np.ndarray  # float32 [N] at SAMPLE_RATE
    opening: np.ndarray  # float32 [T] in 0..1
    width: np.ndarray  # float32 [T] in 0..1 (0.5 = neutral)
    silent: np.ndarray  # bool [T]: no speech within 80 ms of the frame centre


def compose(segments: list[np.ndarray], pauses: list[float], fps: float) -> Utterance:
    """Join speech segments with pauses (seconds; one more pause than segments) and derive mouth targets."""
    if len(pauses) != len(segments) + 1:
        raise ValueError("compose needs one pause before, between and after the speech segments")
    parts, speech_spans, cursor = [], [], 0
    for pause, segment in zip(pauses, segments + [None]):
        silence = np.zeros(int(round(pause * SAMPLE_RATE)), np.float32)
        parts.append(silence)
        cursor += len(silence)
        if segment is not None:
            parts.append(segment)
            speech_spans.append((cursor, cursor + len(segment)))
            cursor += len(segment)
    waveform = np.concatenate(parts)
    num_frames = int(len(waveform) / SAMPLE_RATE * fps)
    opening, width = mouth_targets(waveform, num_frames, fps)
    centres = (np.arange(num_frames) + 0.5) / fps * SAMPLE_RATE
    margin = 0.08 * SAMPLE_RATE
    silent = np.ones(num_frames, bool)
    for start, end in speech_spans:
        silent &= ~((centres > start - margin) & (centres < end + margin))
    opening[silent] = 0.0
    width[silent] = 0.5
    return Utterance(waveform, opening, width, silent)


def mouth_targets(waveform: np.ndarray, num_frames: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Opening from the 300-3000 Hz energy envelope, width from the share of 2.5-6 kHz energy."""
    window, hop = 640, 160  # 40 ms windows every 10 ms
    padded = np.pad(waveform, (window // 2, window // 2))
    count = 1 + (len(padded) - window) // hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, window)[::hop][:count] * np.hanning(window)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(window, 1 / SAMPLE_RATE)
    voiced = power[:, (freqs >= 300) & (freqs < 3000)].sum(1)
    hiss = power[:, (freqs >= 2500) & (freqs < 6000)].sum(1)
    level = 10 * np.log10(voiced + 1e-10)
    level -= level.max()
    open_env = np.clip((level + 32.0) / 26.0, 0.0, 1.0)
    share = hiss / (voiced + hiss + 1e-10)
    width_env = np.clip(0.5 + 1.2 * (share - 0.2), 0.0, 1.0)
    # Sample at each video frame's centre time (same convention as the Whisper features).
    times = (np.arange(count) * hop) / SAMPLE_RATE
    centres = (np.arange(num_frames) + 0.5) / fps
    opening = np.interp(centres, times, open_env)
    width = np.interp(centres, times, width_env)
    kernel = np.array([0.25, 0.5, 0.25])
    opening = np.convolve(np.pad(opening, 1, mode="edge"), kernel, "valid")
    width = np.convolve(np.pad(width, 1, mode="edge"), kernel, "valid")
    return opening.astype(np.float32), width.astype(np.float32)
