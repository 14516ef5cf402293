"""ComfyUI's model management is asked once for the model and Whisper together, with the run's activation memory
from the memory plan kept free (``nodes.model.ManagedModel.on_device``; ``lipsync_core.memory.activation_bytes``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tools.comfyui import comfyui_dir

REPO = Path(__file__).resolve().parents[2]


def test_model_and_whisper_load_in_one_request_with_the_runs_memory(tmp_path):
    script = f"""
import importlib.util, sys
sys.argv = ["main.py", "--cpu"]
from tools.comfyui import define_missing_torchvision_schemas
define_missing_torchvision_schemas()
import comfy.options
comfy.options.enable_args_parsing()
import torch
import comfy.model_management as mm
name = "pack_under_test"
spec = importlib.util.spec_from_file_location(name, {str(REPO / '__init__.py')!r})
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
from pack_under_test.nodes.model import ManagedModel
from pack_under_test.lipsync_core.checkpoint import load
from pack_under_test.lipsync_core.memory import activation_bytes
from pack_under_test.lipsync_core.plan import SamplerOptions
calls = []
mm.load_models_gpu = lambda models, **kwargs: calls.append((len(models), kwargs))
cpu = torch.device("cpu")
loaded = load({str(REPO / 'lipsync_core' / 'toy' / 'assets' / 'toy_sayanything.safetensors')!r})
model = ManagedModel(loaded, loaded.torch_module(), cpu, cpu, torch.float32)
whisper = ManagedModel("whisper", torch.nn.Linear(2, 2), cpu, cpu, torch.float32)
needed = activation_bytes(loaded, SamplerOptions())
with model.on_device(whisper, memory_required=needed) as (got_model, got_whisper):
    assert got_model is loaded and got_whisper == "whisper"
with model.on_device() as alone:
    assert alone is loaded
print("CALLS", calls, needed)
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(comfyui_dir())]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("CALLS"))
    calls, needed = eval(line[len("CALLS "):].rsplit(" ", 1)[0]), int(line.rsplit(" ", 1)[1])  # noqa: S307
    assert needed > 0
    assert calls == [(2, {"memory_required": needed, "force_full_load": True}),
                     (1, {"memory_required": 0, "force_full_load": True})]
