"""ComfyUI model folders of the pack: ``models/sayanything`` (checkpoints), ``models/whisper``,
``models/mediapipe`` (a ``face_landmarker.task`` for mediapipe releases without the legacy face mesh) and
``models/sayanything_motion`` (Mouth Motion from Audio models).

Both are registered through ``folder_paths`` so extra_model_paths.yaml entries named ``sayanything``
or ``whisper`` are honoured. Whisper models are transformers folders, so that folder lists
sub-folders (those holding a ``config.json``), not files.
"""

from __future__ import annotations

import os

import folder_paths

SAYANYTHING_FOLDER = "sayanything"
WHISPER_FOLDER = "whisper"
MEDIAPIPE_FOLDER = "mediapipe"  # face_landmarker.task, only for mediapipe versions without the legacy face mesh
MOTION_FOLDER = "sayanything_motion"  # Mouth Motion from Audio models (`python -m lipsync_core train-motion`)
SVD_FOLDER = "checkpoints"  # the user's svd_xt*.safetensors, shared with ComfyUI's own SVD nodes
SAYANYTHING_EXTENSIONS = {".safetensors", ".sft"}


def register_model_folders() -> None:
    """Add our folders next to ComfyUI's own (idempotent; keeps paths from extra_model_paths.yaml)."""
    models_dir = folder_paths.models_dir
    for name, extensions in ((SAYANYTHING_FOLDER, SAYANYTHING_EXTENSIONS), (WHISPER_FOLDER, {""}),
                             (MEDIAPIPE_FOLDER, {".task"}), (MOTION_FOLDER, SAYANYTHING_EXTENSIONS)):
        default = os.path.join(models_dir, name)
        if name in folder_paths.folder_names_and_paths:
            paths, known = folder_paths.folder_names_and_paths[name]
            if default not in paths:
                paths.append(default)
            folder_paths.folder_names_and_paths[name] = (paths, set(known) | extensions)
        else:
            folder_paths.folder_names_and_paths[name] = ([default], set(extensions))


def folder_paths_for(folder: str) -> list[str]:
    return list(folder_paths.get_folder_paths(folder))


def sayanything_checkpoints() -> list[str]:
    return folder_paths.get_filename_list(SAYANYTHING_FOLDER)


def motion_models() -> list[str]:
    return folder_paths.get_filename_list(MOTION_FOLDER)


def svd_checkpoints() -> list[str]:
    return folder_paths.get_filename_list(SVD_FOLDER)


def whisper_models() -> list[str]:
    """Whisper models in every ``whisper`` model path: transformers folders (``config.json``), and
    CTranslate2 folders (``model.bin``) or openai-whisper ``.pt`` files, converted on first load."""
    names: set[str] = set()
    for root in folder_paths_for(WHISPER_FOLDER):
        if not os.path.isdir(root):
            continue
        for entry in os.scandir(root):
            if entry.is_dir() and any(os.path.isfile(os.path.join(entry.path, marker))
                                      for marker in ("config.json", "model.bin")):
                names.add(entry.name)
            elif entry.is_file() and entry.name.endswith((".pt", ".pth")):
                names.add(entry.name)
    return sorted(names)


def resolve_model_path(folder: str, name: str, *, is_dir: bool = False) -> str:
    """The full path of ``name`` in a model folder, or a ValueError that says where we looked."""
    if not name:
        raise ValueError(f"No model chosen. Put one into models/{folder} and pick it in the node.")
    searched = folder_paths_for(folder)
    for root in searched:
        candidate = os.path.abspath(os.path.join(root, name))
        if os.path.commonpath([candidate, os.path.abspath(root)]) != os.path.abspath(root):
            raise ValueError(f"Model name '{name}' points outside the '{folder}' model folder.")
        if (os.path.isdir(candidate) if is_dir else os.path.isfile(candidate)):
            return candidate
    kind = "folder" if is_dir else "file"
    raise ValueError(
        f"Model {kind} '{name}' not found in the '{folder}' model folder (searched: {', '.join(searched)}). "
        f"Put it into models/{folder}/ (or a '{folder}' entry of extra_model_paths.yaml) and refresh the node."
    )
