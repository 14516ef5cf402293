"""What users and developers run from the checkout.

Shell: ``setup.sh`` (everything on a fresh machine), ``start.sh`` (set up and start ComfyUI, or
``--demo``), ``test.sh``, ``install_comfyui.sh``, ``install_offline_mediapipe.sh``. Python, from the
checkout: ``python tools/comfyui.py`` (the ComfyUI launcher for CPU-only torch),
``python -m tools.run_workflow`` (any workflow headless), ``python -m tools.demo_assets install``,
``python -m tools.make_workflows``; ``tools.comfy_client`` is the headless ComfyUI client they and the
tests share. Test-only helpers live in ``tests/support``, benchmarks in ``benchmarks/``.
"""
