"""The README's two commands in the README's order on one checkout: ``bash tools/start.sh`` (here its
set-up alone, ``--setup-only``: the pack linked into custom_nodes/, the default models, the demo inputs
and the workflows in the ComfyUI folder), then the tests, whose Manager-install test copies that ComfyUI
folder and clones the pack into the copy's custom_nodes/. The copy must leave start.sh's state behind and
the shared folder as it was. The shared folder here is a private copy of .cache/comfyui, so the
checkout's own is never touched. About 15 s (mostly the demo inputs), no server and no pip.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.manager import comfyui_with_pack_cloned
from tools.comfy_client import PACK_FOLDER_NAME
from tools.comfyui import SHIPPED_CUSTOM_NODES, USER_STATE, copy_comfyui
from tools.demo_assets import DEFAULT_MODEL_FILE, PORTRAIT_FILE

REPO = Path(__file__).resolve().parents[2]


def state(comfy: Path) -> dict[str, tuple]:
    """Every entry in the ComfyUI folder's custom_nodes and user state: links by target (not followed),
    files by size and modification time."""
    entries = {}
    for top in ("custom_nodes", *USER_STATE):
        for folder, folders, files in os.walk(comfy / top):
            for name in folders + files:
                path = Path(folder, name)
                if path.is_symlink():
                    entries[str(path.relative_to(comfy))] = ("link", os.readlink(path))
                elif path.is_file():
                    info = path.stat()
                    entries[str(path.relative_to(comfy))] = ("file", info.st_size, info.st_mtime_ns)
    return entries


def test_start_then_the_manager_install_copy(tmp_path):
    shared = copy_comfyui(tmp_path / "shared" / "ComfyUI")
    env = {key: value for key, value in os.environ.items() if key != "SAYANYTHING_BASE"}  # base: the ComfyUI folder
    env.update(SAYANYTHING_SKIP_SETUP="1", SAYANYTHING_COMFYUI=str(shared))
    done = subprocess.run(["bash", str(REPO / "tools" / "start.sh"), "--setup-only"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    link = shared / "custom_nodes" / PACK_FOLDER_NAME
    assert link.is_symlink() and link.resolve() == REPO
    assert (shared / "models" / "sayanything" / DEFAULT_MODEL_FILE).is_file()
    assert (shared / "input" / PORTRAIT_FILE).is_file()
    before = state(shared)

    # The Manager-install test's own step: copy the shared ComfyUI, clone the pack into the copy's custom_nodes.
    comfy = tmp_path / "manager_install" / "ComfyUI"
    pack = comfyui_with_pack_cloned(comfy, source=shared)
    assert not pack.is_symlink() and (pack / "requirements.txt").is_file()
    assert sorted(path.name for path in (comfy / "custom_nodes").iterdir()) == sorted(
        [PACK_FOLDER_NAME, *SHIPPED_CUSTOM_NODES])
    assert not [name for name in USER_STATE if (comfy / name).exists()]
    # The test then puts its models and inputs into the copy: none of it lands in the shared folder.
    (comfy / "models" / "sayanything").mkdir(parents=True)
    (comfy / "models" / "sayanything" / DEFAULT_MODEL_FILE).write_bytes(b"a test model")
    (comfy / "input").mkdir()
    (comfy / "input" / PORTRAIT_FILE).write_bytes(b"a test portrait")
    assert state(shared) == before
