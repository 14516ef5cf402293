"""ComfyUI model folders of the pack: ``models/sayanything`` (checkpoints), ``models/musetalk`` (MuseTalk 1.5's
``unet.pth`` with its ``musetalk.json``, or the converted ``.safetensors``), ``models/whisper``,
``models/mediapipe`` (a ``face_landmarker.task`` for mediapipe releases without the legacy face mesh) and
``models/sayanything_motion`` (Mouth Motion from Audio models). ComfyUI's own ``checkpoints`` (SVD) and ``vae``
(MuseTalk's SD VAE) are read, not registered.

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
MUSETALK_FOLDER = "musetalk"  # musetalkV15/unet.pth + musetalk.json as upstream ships them, or converted files
SVD_FOLDER = "checkpoints"  # the user's svd_xt*.safetensors, shared with ComfyUI's own SVD nodes
VAE_FOLDER = "vae"  # ComfyUI's own: vae-ft-mse-840000-ema-pruned.safetensors for MuseTalk
SAYANYTHING_EXTENSIONS = {".safetensors", ".sft"}
MUSETALK_EXTENSIONS = {".pth", ".safetensors", ".sft"}
MODEL_FOLDERS = (SAYANYTHING_FOLDER, MUSETALK_FOLDER)  # what the Model Loader lists, in this order
VAE_FOLDERS = (SVD_FOLDER, VAE_FOLDER)


def register_model_folders() -> None:
    """Add our folders next to ComfyUI's own (idempotent; keeps paths from extra_model_paths.yaml)."""
    models_dir = folder_paths.models_dir
    for name, extensions in ((SAYANYTHING_FOLDER, SAYANYTHING_EXTENSIONS), (WHISPER_FOLDER, {""}),
                             (MEDIAPIPE_FOLDER, {".task"}), (MOTION_FOLDER, SAYANYTHING_EXTENSIONS),
                             (MUSETALK_FOLDER, MUSETALK_EXTENSIONS)):
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


def lipsync_models() -> list[str]:
    """The Model Loader's files: SayAnything checkpoints, then MuseTalk UNets (each name once)."""
    return _listed(MODEL_FOLDERS)


def vae_files() -> list[str]:
    """The VAE sources: SVD checkpoints (SayAnything) and ComfyUI's VAE files (MuseTalk's SD VAE)."""
    return _listed(VAE_FOLDERS)


def _listed(folders: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for folder in folders:
        names += [name for name in folder_paths.get_filename_list(folder) if name not in names]
    return names


def resolve_in_folders(folders: tuple[str, ...], name: str) -> str:
    """The full path of ``name`` in the first of ``folders`` that has it, or one ValueError naming them all."""
    for folder in folders:
        try:
            return resolve_model_path(folder, name)
        except ValueError:
            if not name:
                raise
    searched = [path for folder in folders for path in folder_paths_for(folder)]
    where = " or ".join(f"models/{folder}/" for folder in folders)
    raise ValueError(
        f"Model file '{name}' not found in the {', '.join(repr(f) for f in folders)} model folders (searched: "
        f"{', '.join(searched)}). Put it into {where} and refresh the node."
    )


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
