"""The shipped toy model makes a generated character talk (the README demo's model)."""

from __future__ import annotations

import numpy as np
import torch

from lipsync_core.face import prepare_face_crops
from lipsync_core.pipeline import SayAnythingPipeline
from lipsync_core.toy.demo import DEMO_MODEL, demo_inputs
from lipsync_core.toy.measure import measure_opening, pearson
from lipsync_core.toy.speech import mouth_targets


def test_demo_model_lip_syncs_a_new_character(whisper_encoder):
    assert DEMO_MODEL.is_file() and DEMO_MODEL.stat().st_size < 20 * 2**20
    frames, track, audio = demo_inputs(seed=3)
    frames, track = frames[:64], type(track)(track.landmarks[:64], track.found[:64], track.frame_size)
    crops = prepare_face_crops(frames, size=64, track=track)  # the synthetic track, as the demo does
    features = whisper_encoder.frame_features(audio, 25, num_frames=len(frames))
    pipeline = SayAnythingPipeline.from_checkpoint(DEMO_MODEL)
    pixels = torch.from_numpy(crops.crops).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    mask = torch.from_numpy(crops.masks)[:, None]
    result = pipeline(pixels, mask, features, reference=pixels[0], num_inference_steps=10,
                      reference_guidance_scale=1.0, audio_guidance_scale=2.0, window_length=8, window_overlap=2,
                      noise_aug_strength=0.0, seed=0)
    generated = ((result + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    from lipsync_core.face import transform_points

    landmarks = transform_points(track.landmarks, crops.transforms)
    measured = measure_opening(generated, landmarks)
    assert measure_opening(crops.crops, landmarks).max() < 0.15  # the source mouth never opens
    target, _ = mouth_targets(audio.waveform.numpy(), len(frames), 25.0)
    assert pearson(measured, target) > 0.6
    assert np.array_equal(generated[crops.masks == 0], crops.crops[crops.masks == 0])
