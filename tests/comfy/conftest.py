"""A real ComfyUI 0.3.75 server for the whole session, with this pack in custom_nodes.

The server runs on a temporary base directory (models, input, output, user) so nothing is written
into the ComfyUI folder or the checkout. Tests that need models put them into
``comfy_base / "models" / <folder>`` through the fixtures below before the server is queried for
the first time (ComfyUI caches folder listings, keyed on the folder's mtime).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

from tools.comfy_client import ComfyClient, ComfyServer

ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("comfy_base")


@pytest.fixture(scope="session")
def comfy_server(comfy_base):
    server = ComfyServer(comfy_base).start()
    yield server
    server.stop()
    if server.process.returncode not in (0, -15, None):
        print(server.log_tail(), file=sys.stderr)


@pytest.fixture
def comfy(comfy_server):
    """A client of the session's server; fails the test if the server died during it."""
    client = ComfyClient(comfy_server.url)
    yield client
    client.close()
    assert comfy_server.alive(), f"ComfyUI died:\n{comfy_server.log_tail()}"


@pytest.fixture(scope="session")
def object_info(comfy_server) -> dict:
    return ComfyClient(comfy_server.url).object_info()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session", autouse=True)
def _torchvision_imported_once():
    # tests/conftest.py defines torchvision's two op schemas for this CPU venv; importing torchvision
    # now lets lipsync_core.models' own guard see it as loaded instead of defining them a second time.
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        import torchvision  # noqa: F401
