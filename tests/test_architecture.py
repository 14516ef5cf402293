"""The layout docs/ARCHITECTURE.md draws, checked on the code: the import graph of ``lipsync_core`` (imports inside
functions included, so none can hide a circle) has no circle and no arrow from a lower layer up to a higher
one; the command line's ``--help`` and the pack's node import load nothing heavy and print nothing unasked."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lipsync_core"

# Bottom to top; a module may import its own layer (without a circle) and the layers below it.
LAYERS = [
    ("ground", {"compat", "configs", "tensors", "metrics", "speed", "plan"}),
    ("media and faces", {"audio", "face", "media", "motion"}),
    ("networks", {"models"}),
    ("sampling", {"pipeline", "svd_import", "memory"}),
    ("model families", {"family", "musetalk"}),
    ("model files and styles", {"checkpoint", "style"}),
    ("runs", {"inference", "dubbing", "streaming"}),
    ("training", {"training"}),
    ("toy world", {"toy"}),
    ("command line", {"commands", "__main__"}),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (relative imports, anywhere in the file)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package[: len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            candidates = [target] if node.module else [f"{target}.{alias.name}" for alias in node.names]
            for candidate in candidates:
                while candidate not in modules and "." in candidate:  # a name imported from a module
                    candidate = candidate.rsplit(".", 1)[0]
                if candidate in modules and candidate != name:
                    graph[name].add(candidate)
    return graph


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for index, (_, members) in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"{module} is in no layer of LAYERS (docs/ARCHITECTURE.md): place it")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_circle():
    graph = import_graph()
    # Packages import their own modules; a module importing its package's __init__ would close a loop there.
    graph = {module: {t for t in targets if not module.startswith(t + ".")} for module, targets in graph.items()}
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


def test_no_import_points_up_the_layers():
    graph = import_graph()
    upward = sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                    if module != "lipsync_core" and layer_of(target) > layer_of(module))
    assert not upward, "imports from a lower layer up to a higher one:\n" + "\n".join(upward)


def test_the_graph_reader_sees_imports_inside_functions(tmp_path):
    # The check above is only as good as the graph: an import inside a function is an arrow too.
    graph = import_graph()
    assert "lipsync_core.training.train" in graph["lipsync_core.toy.run"]  # imported inside run_toy
    assert "lipsync_core.pipeline" in graph["lipsync_core.family"]


HEAVY = ("diffusers", "transformers", "bitsandbytes", "accelerate", "mediapipe")


def test_help_loads_nothing_heavy_and_prints_nothing_unasked():
    script = f"""
import sys
from lipsync_core.__main__ import COMMANDS, main
for argv in [["--help"]] + [[command, "--help"] for command in COMMANDS]:
    try:
        main(argv)
    except SystemExit as done:
        assert done.code == 0, argv
print("HEAVY", sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""  # no warnings, no library reaching for a model hub
    assert done.stdout.splitlines()[-1] == "HEAVY []"
    assert done.stdout.startswith("usage: python -m lipsync_core")
