"""The pack installed the way ComfyUI-Manager installs it: ComfyUI's own files, with the checkout
``git clone``-d into ``custom_nodes`` (tests/comfy/test_manager_install.py, tests/comfy/test_readme_order.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tools.comfy_client import PACK_FOLDER_NAME
from tools.comfyui import copy_comfyui

REPO = Path(__file__).resolve().parents[2]


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def clone_working_tree(destination: Path) -> None:
    """``git clone`` of the checkout at its working tree's state (``git stash create`` makes a commit
    of uncommitted changes without touching the checkout; a local clone carries that object too)."""
    snapshot = run(["git", "-C", REPO, "stash", "create"]).stdout.strip() or "HEAD"
    revision = run(["git", "-C", REPO, "rev-parse", snapshot]).stdout.strip()
    run(["git", "clone", "-q", "--no-checkout", REPO, destination])
    run(["git", "-C", destination, "checkout", "-q", revision])


def comfyui_with_pack_cloned(destination: Path, source: Path | None = None) -> Path:
    """A ComfyUI folder at ``destination`` copied from ``source`` (default the shared one) without its
    user state (``tools.comfyui.copy_comfyui``), the checkout cloned into its custom_nodes; returns the clone."""
    copy_comfyui(destination, source)
    pack = destination / "custom_nodes" / PACK_FOLDER_NAME
    clone_working_tree(pack)
    return pack
