"""The project's benchmarks, run from the checkout; their figures are in BENCHMARKS.md.

- ``python -m lipsync_core bench``: one denoising step against stock diffusers (a command of the library)
- ``python -m benchmarks.face``: landmarks, mask, crop and paste-back per frame
- ``python -m benchmarks.audio``: Whisper features per minute of speech
- ``python -m benchmarks.comfy``: the pack in a real ComfyUI, node by node (``--long-video``: peak RSS per clip)
- ``python -m benchmarks.streaming``: memory and time of ``run`` against video length
- ``bash tools/test.sh -m slow tests/comfy/test_soak.py``: 50 prompts on one server (memory, queue, Cancel)
"""
