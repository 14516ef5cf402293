"""The toy world: talking characters with real speech, held-out identities and sentences (ours).

Each clip is a small "video" (the character talking, its head moving, turning and changing scale,
the jaw dropping as the mouth opens) plus what the pipeline makes of it: the aligned face crops and
the held adaptive mask of ``face.prepare_face_crops``, the very call inference runs, fed the
character's known landmarks (mediapipe does not see drawn faces). Every character has a speaking
style of its own (``SpeakingStyle``: how wide, how round, how crisp), seen only in its own clips; a
training clip's gain and width may vary around it (``WorldConfig.train_clip_gain`` / ``train_clip_width``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..configs import ModelDefaults
from .characters import Character, draw_background, draw_character, draw_mouth, landmarks
from .speech import HELD_OUT_SENTENCES, SENTENCES, SPEEDS, VOICES, Utterance, compose, speak

# A character of gain 1 opens its mouth this much for the loudest speech: room above it for wide speakers.
NEUTRAL_OPENING = 0.75
# The widest a mouth opens (a training clip's gain can lift a wide speaker past 1).
MAX_OPENING = 1.5


@dataclass
class SpeakingStyle:
    """How one character speaks: seen only in its own clips, drawn once per identity.

    ``gain`` scales the opening, ``width_bias`` widens (> 0) or rounds (< 0) the mouth while speaking,
    ``laziness`` blends the opening with a slow copy of itself (0: crisp articulation).
    """

    gain: float = 1.0
    width_bias: float = 0.0
    laziness: float = 0.0

    @classmethod
    def random(cls, rng: np.random.Generator) -> SpeakingStyle:
        return cls(gain=float(rng.uniform(0.55, 1.3)), width_bias=float(rng.uniform(-0.3, 0.3)),
                   laziness=float(rng.uniform(0.0, 0.6)))

    def apply(self, utterance: Utterance) -> tuple[np.ndarray, np.ndarray]:
        """The styled mouth targets (opening, width) of an utterance; silent frames stay shut and neutral."""
        speech = ~utterance.silent
        slow = cv2.GaussianBlur(utterance.opening[None].astype(np.float32), (0, 0), 2.0,
                                borderType=cv2.BORDER_REFLECT)[0]
        base = (1 - self.laziness) * utterance.opening + self.laziness * slow
        opening = np.where(speech, np.clip(self.gain * NEUTRAL_OPENING * base, 0, MAX_OPENING), 0.0).astype(np.float32)
        width = np.where(speech, np.clip(utterance.width + self.width_bias, 0, 1), utterance.width).astype(np.float32)
        return opening, width

    def varied(self, rng: np.random.Generator, gain: float, width: float) -> SpeakingStyle:
        """This style for one clip: the gain times a factor log-uniform in 1/gain..gain, the width bias plus
        up to +-width."""
        return dataclasses.replace(self, gain=self.gain * float(np.exp(rng.uniform(-np.log(gain), np.log(gain)))),
                                   width_bias=self.width_bias + float(rng.uniform(-width, width)))


@dataclass
class WorldConfig:
    crop_size: int = 64
    video_size: int = 80  # the rendered video is a little larger than the crop, as real video is
    fps: float = 25.0
    mask_hold: float = ModelDefaults.mask_hold  # seconds
    train_identities: int = 48
    eval_identities: int = 12
    clips_per_identity: int = 2
    sentences_per_clip: int = 2
    # Training clips in which the character only listens (a silent soundtrack, the mouth shut). A
    # soundtrack that is silent throughout is not the pauses between words to Whisper: its features lie
    # farther from them than speech does, so a model that never heard one opens the mouth at random.
    listening_clips_per_identity: int = 1
    listening_seconds: tuple[float, float] = (1.5, 3.0)
    # The training clips' mask expand is drawn from this range (the evaluation's and inference's is
    # the model's default), so the mask's size tells the model nothing about the source mouth.
    train_mask_expand: tuple[float, float] = (0.04, 0.12)
    # Each character speaks its own way (SpeakingStyle.random); False: every one as SpeakingStyle().
    speaking_styles: bool = True
    # Each training clip's style varies around its character's (SpeakingStyle.varied): a gain factor up to
    # this x or / and a width bias up to +-this, so who speaks does not give away how far the mouth opens.
    # Off by default: it made motion gain more linear but cost speech r (BENCHMARKS.md, toy world v3).
    train_clip_gain: float = 1.0
    train_clip_width: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.train_clip_gain < 1 or self.train_clip_width < 0:
            raise ValueError("train_clip_gain must be 1 (off) or more and train_clip_width 0 (off) or more, got "
                             f"{self.train_clip_gain} and {self.train_clip_width}")


@dataclass
class ToyClip:
    identity: int
    split: str  # "train" or "eval"
    sentences: list[int]
    voice: str
    speed: int
    waveform: np.ndarray  # float32 [N] at 16 kHz
    frames: np.ndarray  # uint8 [T, S, S, 3]: aligned face crops (prepare_face_crops)
    landmarks: np.ndarray  # float32 [T, 478, 2] in crop pixels
    mask: np.ndarray  # uint8 [T, S, S]: the held adaptive mask in crop space (255 = regenerate)
    opening: np.ndarray  # float32 [T] ground truth in 0..1
    width: np.ndarray  # float32 [T]
    silent: np.ndarray  # bool [T]
    style: str = "photo"  # the drawing style
    video: np.ndarray | None = None  # uint8 [T, V, V, 3] the rendered video (held-out clips only)
    video_landmarks: np.ndarray | None = None  # float32 [T, 478, 2] in video pixels (held-out clips only)
    # The opening a neutral speaker (SpeakingStyle()) would have: what style figures are measured against.
    neutral_opening: np.ndarray | None = None
    meta: dict = field(default_factory=dict)  # mask_expand, speaking_style (the character's), clip_style


def head_motion(rng: np.random.Generator, num_frames: int, fps: float) -> np.ndarray:
    """Smooth head motion ``[T, 5]``: dx, dy (canvas fraction), roll (degrees), scale, turn (-1..1)."""
    t = np.arange(num_frames) / fps
    motion = np.zeros((num_frames, 5), np.float32)
    amplitudes = (0.03, 0.02, 6.0, 0.10, 0.7)
    for k, amplitude in enumerate(amplitudes):
        for _ in range(2):
            freq, phase = rng.uniform(0.08, 0.45), rng.uniform(0, 2 * np.pi)
            motion[:, k] += amplitude / 2 * np.sin(2 * np.pi * freq * t + phase)
    motion[:, 3] += 1.0
    return motion


def render_clip(character: Character, opening: np.ndarray, width: np.ndarray, size: int,
                rng: np.random.Generator, fps: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    """Video frames uint8 [T, size, size, 3] and landmarks [T, 478, 2] for per-frame mouth targets."""
    canvas = 2 * size
    background = draw_background(character, canvas, rng)
    motion = head_motion(rng, len(opening), fps)
    frames = np.empty((len(opening), size, size, 3), np.uint8)
    points = np.empty((len(opening), 478, 2), np.float32)
    for i, (open_i, width_i) in enumerate(zip(opening, width)):
        dx, dy, angle, scale, turn = motion[i]
        posed = character.posed(turn, float(open_i))
        image, alpha = draw_character(posed, canvas)
        draw_mouth(image, posed, float(open_i), float(width_i))
        matrix = cv2.getRotationMatrix2D(character.centre, float(angle), float(scale))
        matrix[:, 2] += (dx * canvas, dy * canvas)
        warped = cv2.warpAffine(image, matrix, (canvas, canvas), flags=cv2.INTER_LINEAR)
        warped_alpha = cv2.warpAffine(alpha, matrix, (canvas, canvas), flags=cv2.INTER_LINEAR)[..., None]
        composite = warped * warped_alpha + background * (1 - warped_alpha)
        if character.style in ("photo", "painted"):
            composite = cv2.GaussianBlur(composite, (0, 0), 0.6)
        small = cv2.resize(composite, (size, size), interpolation=cv2.INTER_AREA)
        frames[i] = np.clip(np.round(small), 0, 255).astype(np.uint8)
        moved = landmarks(posed, float(open_i), float(width_i)) @ matrix[:, :2].T + matrix[:, 2]
        # Pixel centres: canvas pixel c covers frame pixel (c + 0.5) / 2 - 0.5.
        points[i] = (moved + 0.5) / 2.0 - 0.5
    return frames, points


def crop_clip(video: np.ndarray, points: np.ndarray, config: WorldConfig,
              mask_expand: float = ModelDefaults.mask_expand):
    """Aligned crops, crop-space landmarks and held masks (uint8) of a rendered clip: inference's own preprocessing."""
    from ..face import FaceTrack, prepare_face_crops, transform_points

    track = FaceTrack(points, np.ones(len(points), bool), video.shape[1:3])
    crops = prepare_face_crops(video, fps=config.fps, size=config.crop_size, track=track, mask_hold=config.mask_hold,
                               expand=mask_expand)
    landmarks = transform_points(points, crops.transforms).astype(np.float32)
    return crops.crops, landmarks, np.round(crops.masks * 255).astype(np.uint8)


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
    total = len(identities) * config.clips_per_identity + config.train_identities * config.listening_clips_per_identity

    def add_clip(character, style, clip_style, split, identity, sentences, voice, speed, utterance, clip_rng,
                 mask_rng):
        mask_expand = (ModelDefaults.mask_expand if split == "eval"
                       else float(mask_rng.uniform(*config.train_mask_expand)))
        opening, width = clip_style.apply(utterance)
        video, points = render_clip(character, opening, width, config.video_size, clip_rng, config.fps)
        crops, crop_points, masks = crop_clip(video, points, config, mask_expand)
        held_out = split == "eval"
        neutral = SpeakingStyle().apply(utterance)[0]
        clips.append(ToyClip(identity, split, sentences, voice, speed, utterance.waveform, crops, crop_points,
                             masks, opening, width, utterance.silent, character.style,
                             video if held_out else None, points if held_out else None, neutral,
                             {"mask_expand": float(mask_expand), "speaking_style": dataclasses.asdict(style),
                              "clip_style": dataclasses.asdict(clip_style)}))
        if progress is not None:
            progress(len(clips), total)

    for split, identity in identities:
        character = Character.random(np.random.default_rng([config.seed, identity]), 2 * config.video_size)
        # Its own stream, so the speech clips are the same whether or not listening clips are drawn.
        own_rng = np.random.default_rng([config.seed, identity, 1])
        style = SpeakingStyle.random(np.random.default_rng([config.seed, identity, 2])) if config.speaking_styles \
            else SpeakingStyle()
        for number in range(config.clips_per_identity):
            clip_style = style
            if split == "train" and (config.train_clip_gain != 1 or config.train_clip_width):
                clip_style = style.varied(np.random.default_rng([config.seed, identity, 3, number]),
                                          config.train_clip_gain, config.train_clip_width)
            sentences = [int(s) for s in rng.choice(sentence_split(split), config.sentences_per_clip, replace=False)]
            voice, speed = VOICES[rng.integers(len(VOICES))], int(SPEEDS[rng.integers(len(SPEEDS))])
            segments = []
            for sentence in sentences:
                key = (sentence, voice, speed)
                if key not in speech_cache:
                    speech_cache[key] = speak(SENTENCES[sentence], voice, speed)
                segments.append(speech_cache[key])
            pauses = [rng.uniform(0.3, 0.8)] + [rng.uniform(0.4, 0.9) for _ in segments[1:]] + [rng.uniform(0.3, 0.6)]
            add_clip(character, style, clip_style, split, identity, sentences, voice, speed,
                     compose(segments, pauses, config.fps), rng, own_rng)
        if split == "train":
            for _ in range(config.listening_clips_per_identity):
                silence = compose([], [float(own_rng.uniform(*config.listening_seconds))], config.fps)
                add_clip(character, style, style, split, identity, [], "", 0, silence, own_rng, own_rng)
    return clips
