"""Model nodes: the model loader (SayAnything with the VAE from the user's SVD checkpoint, or MuseTalk 1.5 with
the SD VAE) and the ID-Guider reference encoder; plus the wrapper that hands our torch modules to ComfyUI's model
management so they are loaded to the GPU and offloaded like ComfyUI's own models."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import comfy.model_management as mm
import comfy.model_patcher
import torch
from comfy_api.latest import io

from . import model_folders
from .types import PRECISIONS, IdFeatures, SayAnythingModel, check_frames, node_schema, torch_dtype

VAE_FROM_MODEL_FILE = "(VAE inside the SayAnything file)"


class ManagedModel:
    """A lipsync_core object whose torch module ComfyUI's model management owns.

    ``payload`` is what lipsync_core calls (a model, a pipeline, a Whisper encoder); ``module`` is
    the ``torch.nn.Module`` holding all its weights. ``on_device()`` asks model management to load
    the module (freeing other models if memory is short) and yields the payload ready to run.
    """

    def __init__(
        self,
        payload: Any,
        module: torch.nn.Module,
        load_device: torch.device,
        offload_device: torch.device,
        dtype: torch.dtype,
    ):
        self.payload = payload
        self.dtype = dtype
        self.load_device = load_device
        self.patcher = comfy.model_patcher.ModelPatcher(module, load_device=load_device, offload_device=offload_device)

    @contextmanager
    def on_device(self, *others: ManagedModel, memory_required: int = 0) -> Iterator[Any]:
        """This model (and ``others``: yields all their payloads) on the device, in one request to model management,
        which also keeps ``memory_required`` bytes free for the run's activations (``memory.activation_bytes``):
        loading them one by one could evict the first for the second."""
        # Full load: our modules have no comfy.ops weight casting, so a partial (lowvram) load would
        # leave layers on the offload device. Model management still frees other models to make room.
        mm.load_models_gpu([self.patcher, *(other.patcher for other in others)], memory_required=memory_required,
                           force_full_load=True)
        yield (self.payload, *(other.payload for other in others)) if others else self.payload


def devices(device_choice: str = "auto") -> tuple[torch.device, torch.device]:
    if device_choice == "cpu":
        return torch.device("cpu"), torch.device("cpu")
    return mm.get_torch_device(), mm.unet_offload_device()


def load_whisper_managed(path: str, precision: str, device: str) -> ManagedModel:
    from ..lipsync_core.inference import load_whisper

    load_device, offload_device = devices(device)
    dtype = torch_dtype(precision, load_device)
    whisper = load_whisper(path, dtype=dtype, device=offload_device)
    return ManagedModel(whisper, whisper, load_device, offload_device, dtype)


class SayAnythingModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="SayAnythingModelLoader",
            display_name="SayAnything Model Loader",
            description="Loads a SayAnything checkpoint (UNet, ID-Guider, audio projection) from "
            "models/sayanything and the temporal VAE from your Stable Video Diffusion checkpoint in "
            "models/checkpoints (the same svd_xt file ComfyUI's SVD nodes use), or a MuseTalk 1.5 UNet from "
            "models/musetalk (musetalkV15/unet.pth with its musetalk.json, or a converted .safetensors) with the SD "
            "VAE vae-ft-mse-840000-ema-pruned.safetensors from models/vae; nothing is downloaded. Connect model to "
            "SayAnything Reference Encode (ID-Guider) and SayAnything Sampler, or (MuseTalk too) to SayAnything "
            "Lip Sync Video.",
            inputs=[
                io.Combo.Input(
                    "model",
                    options=model_folders.lipsync_models(),
                    tooltip="A SayAnything .safetensors file in models/sayanything, or a MuseTalk 1.5 UNet in "
                    "models/musetalk (musetalkV15/unet.pth with musetalk.json beside it, or its converted "
                    ".safetensors).",
                ),
                io.Combo.Input(
                    "svd_checkpoint",
                    options=[VAE_FROM_MODEL_FILE] + model_folders.vae_files(),
                    tooltip="The VAE. SayAnything: your svd_xt / svd_xt_1_1 .safetensors in models/checkpoints "
                    "(only its VAE is read), or the first entry if the SayAnything file carries its own VAE. "
                    "MuseTalk: vae-ft-mse-840000-ema-pruned.safetensors in models/vae.",
                ),
                io.Combo.Input(
                    "precision",
                    options=PRECISIONS,
                    default="auto",
                    tooltip="Weight precision; auto uses bf16 where the GPU supports it, else fp16, "
                    "and fp32 on the CPU.",
                ),
            ],
            outputs=[SayAnythingModel.Output(display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, model: str, svd_checkpoint: str):
        # Replaces ComfyUI's "value not in list" check with a message that names folder and file.
        try:
            model_folders.resolve_in_folders(model_folders.MODEL_FOLDERS, model)
            if svd_checkpoint != VAE_FROM_MODEL_FILE:
                model_folders.resolve_in_folders(model_folders.VAE_FOLDERS, svd_checkpoint)
        except ValueError as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, model: str, svd_checkpoint: str, precision: str) -> io.NodeOutput:
        from ..lipsync_core.checkpoint import load

        checkpoint = model_folders.resolve_in_folders(model_folders.MODEL_FOLDERS, model)
        svd_path = None
        if svd_checkpoint != VAE_FROM_MODEL_FILE:
            svd_path = model_folders.resolve_in_folders(model_folders.VAE_FOLDERS, svd_checkpoint)
        load_device, offload_device = devices()
        dtype = torch_dtype(precision, load_device)
        loaded = load(checkpoint, vae=svd_path, dtype=dtype, device=offload_device)
        # The VAE in the precision ComfyUI gives its own VAEs on this device (fp32 where bf16 is not native: an fp16
        # encode of the canvas loses detail; ComfyUI's --fp32-vae / --bf16-vae flags apply too).
        loaded.vae.to(mm.vae_dtype(load_device, [torch.bfloat16, torch.float32]))
        return io.NodeOutput(ManagedModel(loaded, loaded.torch_module(), load_device, offload_device, dtype))


class SayAnythingReferenceEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="SayAnythingReferenceEncode",
            display_name="SayAnything Reference Encode (ID-Guider)",
            description="Encodes the identity reference once per video with the ID-Guider. By default the "
            "reference is one frame of the face crops. Connect model from SayAnything Model Loader and reference "
            "from SayAnything Face Crop's crops; id_features go to SayAnything Sampler.",
            inputs=[
                SayAnythingModel.Input("model", tooltip="From SayAnything Model Loader."),
                io.Image.Input(
                    "reference",
                    tooltip="Face crops (or any aligned face image at the crop size); one of them is the reference.",
                ),
                io.Int.Input(
                    "frame_index",
                    default=0,
                    min=0,
                    max=1_000_000,
                    tooltip="Which image of the batch to use; clamped to the last one.",
                ),
            ],
            outputs=[IdFeatures.Output(display_name="id_features")],
        )

    @classmethod
    def execute(cls, model: ManagedModel, reference, frame_index: int) -> io.NodeOutput:
        images = check_frames(reference, "reference")
        image = images[min(frame_index, images.shape[0] - 1)].unsqueeze(0)
        with model.on_device() as loaded:
            features = loaded.encode_reference(image)
        return io.NodeOutput(features)
