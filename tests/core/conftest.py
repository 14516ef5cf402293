import pytest
import torch

from lipsync_core.configs import SayAnythingConfig, build_vae
from lipsync_core.models import SayAnythingModel


def randomize_zero_inits(model: SayAnythingModel, seed: int = 0) -> SayAnythingModel:
    """Give the zero-initialised parts (ID-Guider outputs, mask channel) random weights.

    A fresh model ignores the reference and the mask by design; tests that check those inputs steer
    the output need them live.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for projection in model.id_guider.projections:
            projection.weight.copy_(torch.randn(projection.weight.shape, generator=generator) * 0.1)
            projection.bias.copy_(torch.randn(projection.bias.shape, generator=generator) * 0.1)
        weight = model.unet.conv_in.weight
        weight[:, 8:] = torch.randn(weight[:, 8:].shape, generator=generator) * 0.1
    return model


@pytest.fixture
def tiny_config() -> SayAnythingConfig:
    return SayAnythingConfig.preset("tiny")


@pytest.fixture
def tiny_model(tiny_config) -> SayAnythingModel:
    torch.manual_seed(0)
    return randomize_zero_inits(SayAnythingModel(tiny_config).eval())


@pytest.fixture
def tiny_vae():
    torch.manual_seed(1)
    return build_vae("tiny").eval()
