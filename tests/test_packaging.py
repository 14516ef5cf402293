"""What ComfyUI-Manager and the registry read: requirements.txt and pyproject.toml's [tool.comfy]."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools.comfyui import comfyui_dir

REPO = Path(__file__).resolve().parents[1]


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_requirements_add_only_what_comfyui_lacks_and_never_torch():
    ours = requirement_names(REPO / "requirements.txt")
    assert ours, "requirements.txt lists nothing"
    assert not ours & {"torch", "torchvision", "torchaudio"}
    # Repeating what ComfyUI pins would only invite pip to move the user's versions.
    assert not ours & requirement_names(comfyui_dir() / "requirements.txt")


def test_pyproject_reads_requirements_and_fills_the_registry_fields():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (the pack itself runs on 3.10)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert "dependencies" not in project and project["dynamic"] == ["dependencies"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    comfy = pyproject["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and isinstance(comfy["includes"], list)
    assert project["requires-python"] == ">=3.10" and pyproject["tool"]["ruff"]["target-version"] == "py310"
