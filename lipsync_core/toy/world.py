"""The toy world: talking characters with real speech, held-out identities and sentences (ours)."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .characters import Character, draw_background, draw_character, draw_mouth, landmarks
from .speech import HELD_OUT_SENTENCES, SENTENCES, SPEEDS, VOICES, compose, speak


@dataclass
class WorldConfig:
    crop_size: int = 64
    fps: float = 25.0
    train_identities: int = 48
    eval_identities: int = 12
    clips_per_identity: int = 2
    sentences_per_clip: int = 2
    seed: int = 0


@dataclass
class ToyClip:
    identity: int
    split: str  # "train" or "eval"
    sentences: list[int]
    voice: str
    speed: int
    waveform: np.ndarray  # float32 [N] at 16 kHz
    frames: np.ndarray  # uint8 [T, S, S, 3], already aligned crops
    landmarks: np.ndarray  # float32 [T, 478, 2] in crop pixels
    opening: np.ndarray  # float32 [T] ground truth in 0..1
    width: np.ndarray  # float32 [T]
    silent: np.ndarray  # bool [T]
    style: str = "photo"
    meta: dict = field(default_factory=dict)


def head_motion(rng: np.random.Generator, num_frames: int, fps: float) -> np.ndarray:
    """Small smooth head motion: [T, 4] = dx, dy (canvas fraction), rotation (degrees), scale."""
    t = np.arange(num_frames) / fps
    motion = np.zeros((num_frames, 4), np.float32)
    amplitudes = (0.018, 0.014, 3.0, 0.02)
    for k, amplitude in enumerate(amplitudes):
        for _ in range(2):
            freq, phase = rng.uniform(0.08, 0.45), rng.uniform(0, 2 * np.pi)
            motion[:, k] += amplitude / 2 * np.sin(2 * np.pi * freq * t + phase)
    motion[:, 3] += 1.0
    return motion


def render_clip(character: Character, opening: np.ndarray, width: np.ndarray, crop_size: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 [T, S, S, 3] and landmarks [T, 478, 2] for per-frame mouth targets."""
    canvas = 2 * crop_size
    background = draw_background(character, canvas, rng)
    layer, alpha = draw_character(character, canvas)
    motion = head_motion(rng, len(opening), 25.0)
    frames = np.empty((len(opening), crop_size, crop_size, 3), np.uint8)
    points = np.empty((len(opening), 478, 2), np.float32)
    for i, (open_i, width_i) in enumerate(zip(opening, width)):
        image = layer.copy()
        draw_mouth(image, character, float(open_i), float(width_i))
        dx, dy, angle, scale = motion[i]
        matrix = cv2.getRotationMatrix2D(character.centre, float(angle), float(scale))
        matrix[:, 2] += (dx * canvas, dy * canvas)
        warped = cv2.warpAffine(image, matrix, (canvas, canvas), flags=cv2.INTER_LINEAR)
        warped_alpha = cv2.warpAffine(alpha, matrix, (canvas, canvas), flags=cv2.INTER_LINEAR)[..., None]
        composite = warped * warped_alpha + background * (1 - warped_alpha)
        if character.style == "photo":
            composite = cv2.GaussianBlur(composite, (0, 0), 0.6)
        small = cv2.resize(composite, (crop_size, crop_size), interpolation=cv2.INTER_AREA)
        frames[i] = np.clip(np.round(small), 0, 255).astype(np.uint8)
        canvas_points = landmarks(character, float(open_i), float(width_i))
        moved = canvas_points @ matrix[:, :2].T + matrix[:, 2]
        # Pixel centres: canvas pixel c covers crop pixel (c + 0.5) / 2 - 0.5.
        points[i] = (moved + 0.5) / 2.0 - 0.5
    return frames, points


def sentence_split(split: str) -> list[int]:
    count = len(SENTENCES)
    return list(range(count - HELD_OUT_SENTENCES)) if split == "train" else list(
        range(count - HELD_OUT_SENTENCES, count))


def generate_world(config: WorldConfig, progress=None) -> list[ToyClip]:
    """All clips of the world, train split first. Deterministic for a given config."""
    rng = np.random.default_rng(config.seed)
    speech_cache: dict[tuple[int, str, int], np.ndarray] = {}
    clips = []
    identities = [("train", i) for i in range(config.train_identities)] + [
        ("eval", config.train_identities + i) for i in range(config.eval_identities)]
    for split, identity in identities:
        character = Character.random(np.random.default_rng([config.seed, identity]), 2 * config.crop_size)
        for _ in range(config.clips_per_identity):
            sentences = [int(s) for s in rng.choice(sentence_split(split), config.sentences_per_clip, replace=False)]
            voice, speed = VOICES[rng.integers(len(VOICES))], int(SPEEDS[rng.integers(len(SPEEDS))])
            segments = []
            for sentence in sentences:
                key = (sentence, voice, speed)
                if key not in speech_cache:
                    speech_cache[key] = speak(SENTENCES[sentence], voice, speed)
                segments.append(speech_cache[key])
            pauses = [rng.uniform(0.3, 0.8)] + [rng.uniform(0.4, 0.9) for _ in segments[1:]] + [rng.uniform(0.3, 0.6)]
            utterance = compose(segments, pauses, config.fps)
            frames, points = render_clip(character, utterance.opening, utterance.width, config.crop_size, rng)
            clips.append(ToyClip(identity, split, sentences, voice, speed, utterance.waveform, frames, points,
                                 utterance.opening, utterance.width, utterance.silent, character.style))
            if progress is not None:
                progress(len(clips), len(identities) * config.clips_per_identity)
    return clips
