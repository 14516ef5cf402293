"""Dubbing cases for the user's-path proof: generated talking videos and a new sentence for each (ours).

A case is a held-out character's rendered video (its mouth and jaw move with its own speech: a
talking source) with the known face track, plus new speech: another held-out clip's sentence, cut at
a seeded offset so silences do not line up. ``tools/toy_proof.py`` dubs every case through the real
ComfyUI workflow and through ``dubbing.lipsync``, then scores them with ``case_figures``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..audio import Audio
from ..dubbing import lipsync
from ..metrics import pearson
from ..plan import SamplerOptions
from ..tensors import frames_to_uint8, uint8_to_frames
from .evaluate import CLOSED_THRESHOLD, opening_figures
from .measure import measure_opening
from .speech import SAMPLE_RATE
from .world import WorldConfig, generate_world


@dataclass
class DubCase:
    name: str
    style: str
    video: np.ndarray  # uint8 [T, V, V, 3], the talking source
    landmarks: np.ndarray  # float32 [T, 478, 2] in video pixels (the known face track)
    source_audio: np.ndarray  # float32 [N] the source's own speech (in the source file, as a user's video has)
    source_opening: np.ndarray  # float32 [T] the source mouth
    speech: np.ndarray  # float32 [N] the new speech, exactly T frames long
    opening: np.ndarray  # float32 [T] the new speech's true opening
    silent: np.ndarray  # bool [T] no speech in the new audio

    def face_track(self):
        from ..face import FaceTrack

        return FaceTrack(self.landmarks, np.ones(len(self.landmarks), bool), self.video.shape[1:3])


def _samples(frames: int, fps: float) -> int:
    return int(np.ceil(frames / fps * SAMPLE_RATE))


def dub_cases(seed: int, count: int, max_frames: int = 100, fps: float = 25.0) -> list[DubCase]:
    """``count`` cases from a world of ``count`` held-out identities drawn with ``seed``."""
    world = [c for c in generate_world(WorldConfig(train_identities=0, eval_identities=count, clips_per_identity=1,
                                                   seed=seed, fps=fps)) if c.split == "eval"]
    rng = np.random.default_rng([seed, 99])
    cases = []
    for number, clip in enumerate(world):
        partner = world[(number + 1) % len(world)]
        frames = min(len(clip.video), len(partner.opening), max_frames)
        start = int(rng.integers(0, len(clip.video) - frames + 1))
        offset = int(rng.integers(0, len(partner.opening) - frames + 1))
        speech = np.zeros(_samples(frames, fps), np.float32)
        piece = partner.waveform[_samples(offset, fps):][: len(speech)]
        speech[: len(piece)] = piece
        window = slice(start, start + frames)
        cases.append(DubCase(
            name=f"seed{seed}-clip{number}", style=clip.style, video=clip.video[window],
            landmarks=clip.video_landmarks[window], source_audio=clip.waveform[_samples(start, fps):][: len(speech)],
            source_opening=clip.opening[window], speech=speech, opening=partner.opening[offset:offset + frames],
            silent=partner.silent[offset:offset + frames]))
    return cases


def case_figures(cases: list[DubCase], dubbed: list[np.ndarray], silenced: list[np.ndarray] | None = None) -> dict:
    """Lip-sync figures of dubbed videos (uint8 [T, V, V, 3] per case), measured with the pixel ruler.

    ``silenced``: the same sources dubbed with silence (LipLeak), optional.
    """
    measured = [measure_opening(video, case.landmarks) for video, case in zip(dubbed, cases)]
    figures = opening_figures(measured, [c.opening for c in cases], [c.silent for c in cases])
    speech = np.concatenate([~c.silent for c in cases])
    dub, source, new = (np.concatenate(x)[speech] for x in (measured, [c.source_opening for c in cases],
                                                               [c.opening for c in cases]))
    figures.update({
        "dub_vs_source_mouth": pearson(dub, source),
        "dub_source_floor": pearson(new, source),  # a perfect lip-syncer's score against the source
        "silent_closed": float(np.mean(np.concatenate(measured)[~speech] < CLOSED_THRESHOLD)),
        "cases": len(cases),
        "frames": int(sum(len(m) for m in measured)),
    })
    if silenced is not None:
        leak = np.concatenate([measure_opening(video, case.landmarks) for video, case in zip(silenced, cases)])
        figures.update({"lipleak_open": float(np.mean(leak >= CLOSED_THRESHOLD)),
                        "source_open": float(np.mean(np.concatenate([c.source_opening for c in cases])
                                                     >= CLOSED_THRESHOLD))})
    return figures


def library_lipsync(case: DubCase, speech: np.ndarray, loaded, whisper, fps: float = 25.0,
                    progress=None) -> np.ndarray:
    """One case dubbed with ``speech`` through ``dubbing.lipsync``, every setting on auto (the model
    file's defaults); uint8 frames. ``progress(stage, done, total)`` as ``dubbing.dub``'s."""
    frames, _audio, _mask = lipsync(
        uint8_to_frames(case.video), fps, Audio(torch.from_numpy(speech), SAMPLE_RATE), loaded,
        whisper, SamplerOptions(seed=0), fit_mode="cut", track=case.face_track(), progress=progress)
    return frames_to_uint8(frames)
