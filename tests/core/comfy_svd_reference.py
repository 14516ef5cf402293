"""Run ComfyUI 0.3.75's own SVD model definition (in a subprocess: comfy parses argv and needs the
torchvision workaround) and write what the SVD-import tests compare against.

    PYTHONPATH=CHECKOUT:COMFY_ROOT python comfy_svd_reference.py COMFY_ROOT OUT_DIR

Writes ``OUT_DIR/full_keys.json`` (original key -> shape of the full-size SVD UNet and VAE, built on
the meta device) and ``OUT_DIR/tiny_svd.safetensors`` + ``OUT_DIR/tiny_io.safetensors``: a tiny model
in the same original layout with random weights, and its inputs/outputs for UNet, VAE encoder and
temporal decoder forwards computed by ComfyUI's code.
"""

import json
import sys
from pathlib import Path

import torch

from tools.comfyui import define_missing_torchvision_schemas

define_missing_torchvision_schemas()  # before anything imports the registry's CUDA-linked torchvision
out_dir = Path(sys.argv[2])
sys.argv = [sys.argv[0], "--cpu"]

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing(True)  # so comfy reads --cpu from the argv set above
from comfy.ldm.models.autoencoder import AutoencodingEngine  # noqa: E402
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel  # noqa: E402
from comfy.ldm.modules.encoders.noise_aug_modules import Timestep  # noqa: E402
from safetensors.torch import save_file  # noqa: E402


def unet_config(model_channels, channel_mult, num_res_blocks, depth, depth_output, context_dim, adm, head_channels):
    # comfy/supported_models.py SVD_img2vid.unet_config completed as comfy/model_detection.py
    # detect_unet_config fills it for a video checkpoint, plus SVD_img2vid.unet_extra_config.
    return dict(
        image_size=None, in_channels=8, out_channels=4, model_channels=model_channels,
        num_res_blocks=num_res_blocks, channel_mult=channel_mult, transformer_depth=depth,
        transformer_depth_output=depth_output, transformer_depth_middle=1, use_linear_in_transformer=True,
        context_dim=context_dim, adm_in_channels=adm, num_classes="sequential", use_spatial_transformer=True,
        legacy=False, extra_ff_mix_layer=True, use_spatial_context=True, merge_strategy="learned_with_images",
        merge_factor=0.0, video_kernel_size=[3, 1, 1], use_temporal_resblock=True, use_temporal_attention=True,
        disable_temporal_crossattention=False, num_heads=-1, num_head_channels=head_channels,
        attn_precision=torch.float32,
    )


def vae(ch, ch_mult, num_res_blocks):
    # comfy/sd.py VAE.__init__ for a state dict with "decoder.mid.block_1.mix_factor" (SVD's VAE).
    encoder_config = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
                      "ch": ch, "ch_mult": ch_mult, "num_res_blocks": num_res_blocks, "attn_resolutions": [],
                      "dropout": 0.0}
    decoder_config = dict(encoder_config, video_kernel_size=[3, 1, 1], alpha=0.0)
    return AutoencodingEngine(
        regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
        encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": encoder_config},
        decoder_config={"target": "comfy.ldm.modules.temporal_ae.VideoDecoder", "params": decoder_config},
    )


out_dir.mkdir(parents=True, exist_ok=True)

# 1. Full size on the meta device: exact original keys and shapes.
with torch.device("meta"):
    full_unet = UNetModel(**unet_config(320, [1, 2, 4, 4], [2, 2, 2, 2], [1, 1, 1, 1, 1, 1, 0, 0],
                                        [1] * 9 + [0] * 3, 1024, 768, 64))
    full_vae = vae(128, [1, 2, 4, 4], 2)
shapes = {}
for prefix, module in (("model.diffusion_model.", full_unet), ("first_stage_model.", full_vae)):
    shapes.update({prefix + key: list(value.shape) for key, value in module.state_dict().items()})
(out_dir / "full_keys.json").write_text(json.dumps(shapes))

# 2. Tiny model in the original layout (the tiny preset's shapes), random weights, reference outputs.
generator = torch.Generator().manual_seed(0)
tiny_unet = UNetModel(**unet_config(32, [1, 2], [1, 1], [1, 0], [1, 1, 0, 0], 32, 24, 16)).eval()
tiny_vae = vae(32, [1, 1, 1], 2).eval()
tensors = {}
for prefix, module in (("model.diffusion_model.", tiny_unet), ("first_stage_model.", tiny_vae)):
    for key, value in module.state_dict().items():
        filled = torch.randn(value.shape, generator=generator) * 0.1
        value.copy_(filled)
        tensors[prefix + key] = filled
tensors["conditioner.embedders.0.open_clip.model.visual.proj"] = torch.randn(8, 4, generator=generator)
save_file(tensors, str(out_dir / "tiny_svd.safetensors"))

frames, size = 3, 8
x = torch.randn(frames, 8, size, size, generator=generator)
timestep = torch.full((frames,), 0.3)
context = torch.randn(1, 2, 32, generator=generator).repeat(frames, 1, 1)
ids = torch.tensor([5.0, 127.0, 0.02])  # fps - 1, motion bucket, augmentation
embed = Timestep(8)
y = torch.cat([embed(ids[i : i + 1]) for i in range(3)], dim=1).flatten()[None].repeat(frames, 1)
pixels = torch.rand(frames, 3, 16, 16, generator=generator) * 2 - 1
latents = torch.randn(frames, 4, 4, 4, generator=generator)
with torch.no_grad():
    unet_out = tiny_unet(x, timesteps=timestep, context=context, y=y, num_video_frames=frames,
                         image_only_indicator=torch.zeros(1, frames))
    moments = tiny_vae.encoder(pixels)
    decoded = tiny_vae.decoder(latents)  # as comfy decodes: the whole batch is one clip
io = {"x": x, "timestep": timestep, "context": context, "added_time_ids": ids[None], "unet_out": unet_out,
      "pixels": pixels, "moments": moments, "latents": latents, "decoded": decoded}
save_file({key: value.contiguous() for key, value in io.items()}, str(out_dir / "tiny_io.safetensors"))
print("ok")
