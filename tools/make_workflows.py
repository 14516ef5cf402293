"""Write the example workflows in workflows/ (ComfyUI's UI format, what users load and share).

Usage: ``python -m tools.make_workflows`` (starts a private ComfyUI to read /object_info, so socket
and widget layouts are exactly what the running frontend expects). The frontend test loads every
file in the real web UI and checks the UI->API conversion against the frontend's own.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.comfy_client import UPLOAD_EXTRA_VALUES, WIDGET_TYPES, ComfyClient, ComfyServer, input_specs
from tools.demo_assets import (
    DEFAULT_MODEL_FILE,
    DRIVING_VIDEO_FILE,
    MASKED_PORTRAIT_FILE,
    MOTION_MODEL_FILE,
    MUSETALK_UNET_FILE,
    MUSETALK_VAE_FILE,
    MUSETALK_WHISPER_FOLDER,
    PORTRAIT_FILE,
    SPEECH_FILE,
    VIDEO_FILE,
    WHISPER_FOLDER,
)

REPO = Path(__file__).resolve().parent.parent

# The workflows run as they are on what tools/start.sh installs: the default model (which carries
# its own VAE) and the demo inputs. With a real model, pick it in SayAnything Model Loader and pick
# your svd_xt.safetensors as svd_checkpoint.
MODEL_FILE = DEFAULT_MODEL_FILE
VAE_FROM_MODEL_FILE = "(VAE inside the SayAnything file)"  # nodes/model.py's first svd_checkpoint entry


@dataclass
class Graph:
    object_info: dict
    nodes: list[dict] = field(default_factory=list)
    links: list[list] = field(default_factory=list)

    def add(self, node_type: str, pos: tuple[int, int], title: str | None = None, **widgets: Any) -> int:
        info = self.object_info[node_type]
        node_id = len(self.nodes) + 1
        inputs, values = [], []
        for name, kind, options in input_specs(info):
            is_widget = kind in WIDGET_TYPES and not options.get("forceInput")
            if not is_widget:
                inputs.append({"name": name, "type": kind, "link": None})
                continue
            value = widgets.pop(name, options.get("default"))
            if value is None and kind == "COMBO":
                choices = info["input"].get("required", {}).get(name) or info["input"]["optional"][name]
                value = choices[1].get("options", [None])[0] if len(choices) > 1 else None
            values.append(value)
            inputs.append({"name": name, "type": kind, "widget": {"name": name}, "link": None})
            if options.get("control_after_generate"):
                values.append("fixed")
            if options.get("image_upload") or options.get("video_upload"):
                values.append("image")
            if options.get("audio_upload"):
                values.extend([None, ""][: UPLOAD_EXTRA_VALUES["audio_upload"]])
        if widgets:
            raise KeyError(f"{node_type} has no widgets {sorted(widgets)}")
        outputs = [
            {"name": (info["output_name"][i] if info.get("output_name") else kind), "type": kind, "links": []}
            for i, kind in enumerate(info["output"])
        ]
        node = {
            "id": node_id, "type": node_type, "pos": list(pos), "size": [320, 60 + 26 * len(inputs)],
            "flags": {}, "order": node_id - 1, "mode": 0, "inputs": inputs, "outputs": outputs,
            "properties": {"Node name for S&R": node_type}, "widgets_values": values,
        }
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node_id

    def connect(self, source: int, output: str | int, target: int, input_name: str) -> None:
        src, dst = self.nodes[source - 1], self.nodes[target - 1]
        slot = output if isinstance(output, int) else [o["name"] for o in src["outputs"]].index(output)
        dst_slot = [i["name"] for i in dst["inputs"]].index(input_name)
        link_id = len(self.links) + 1
        kind = src["outputs"][slot]["type"]
        self.links.append([link_id, source, slot, target, dst_slot, kind])
        src["outputs"][slot]["links"].append(link_id)
        dst["inputs"][dst_slot]["link"] = link_id

    def workflow(self, note: str) -> dict:
        nodes = list(self.nodes)
        nodes.append({
            "id": len(nodes) + 1, "type": "Note", "pos": [0, -260], "size": [520, 220], "flags": {},
            "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
            "widgets_values": [note],
        })
        return {
            "last_node_id": len(nodes), "last_link_id": len(self.links), "nodes": nodes, "links": self.links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.6, "offset": [130, 580]}}, "version": 0.4,
        }


def lipsync_chain(g: Graph, images: tuple[int, str], audio: tuple[int, str], fps: tuple[int, str],
                  user_mask: tuple[int, str] | None = None, x: int = 800, sampler: dict | None = None,
                  fit_mode: str = "loop") -> dict[str, int]:
    """The shared middle of every workflow: fit, Whisper, face, model, sampler, paste, save.

    ``sampler``: widget values of SayAnything Sampler other than the defaults. Returns the node ids by role
    (fit, whisper, face, model, sampler), for workflows that add to the chain."""
    fit = g.add("SayAnythingFitAudioToVideo", (x, 0), mode=fit_mode)
    g.connect(*images, fit, "images")
    g.connect(*audio, fit, "audio")
    g.connect(*fps, fit, "fps")

    whisper = g.add("SayAnythingWhisperLoader", (x, 420), model=WHISPER_FOLDER)
    features = g.add("SayAnythingWhisperFeatures", (x + 380, 420))
    g.connect(whisper, "whisper", features, "whisper")
    g.connect(fit, "audio", features, "audio")
    g.connect(*fps, features, "fps")
    g.connect(fit, "frame_count", features, "frame_count")

    face = g.add("SayAnythingFaceMask", (x + 380, 0), user_mask_mode="replace")
    g.connect(fit, "images", face, "images")
    g.connect(*fps, face, "fps")
    if user_mask is not None:
        g.connect(*user_mask, face, "user_mask")
    preview = g.add("PreviewImage", (x + 760, -420), title="Mask and landmarks")
    g.connect(face, "preview", preview, "images")
    crop = g.add("SayAnythingFaceCrop", (x + 760, 0))
    g.connect(fit, "images", crop, "images")
    g.connect(face, "mask", crop, "mask")
    g.connect(face, "face_track", crop, "face_track")

    model = g.add("SayAnythingModelLoader", (x + 380, 700), model=MODEL_FILE,
                  svd_checkpoint=VAE_FROM_MODEL_FILE)
    reference = g.add("SayAnythingReferenceEncode", (x + 760, 700))
    g.connect(model, "model", reference, "model")
    g.connect(model, "model", crop, "model")
    g.connect(model, "model", face, "model")  # the mask the model was trained with
    g.connect(crop, "crops", reference, "reference")

    sampler = g.add("SayAnythingSampler", (x + 1140, 0), **(sampler or {}))
    g.connect(model, "model", sampler, "model")
    g.connect(crop, "crops", sampler, "crops")
    g.connect(crop, "crop_mask", sampler, "crop_mask")
    g.connect(features, "features", sampler, "audio_features")
    g.connect(reference, "id_features", sampler, "id_features")
    g.connect(*fps, sampler, "fps")

    paste = g.add("SayAnythingFacePaste", (x + 1520, 0))
    g.connect(fit, "images", paste, "images")
    g.connect(sampler, "crops", paste, "crops")
    g.connect(crop, "crop_mask", paste, "crop_mask")
    g.connect(crop, "face_crop", paste, "face_crop")

    video = g.add("CreateVideo", (x + 1900, 0))
    g.connect(paste, "images", video, "images")
    g.connect(*fps, video, "fps")
    g.connect(fit, "audio", video, "audio")
    save = g.add("SaveVideo", (x + 2280, 0), filename_prefix="video/sayanything", format="mp4", codec="h264")
    g.connect(video, 0, save, "video")
    return {"fit": fit, "whisper": whisper, "face": face, "model": model, "sampler": sampler}


MODELS_NOTE = (
    f"Models: models/sayanything/{MODEL_FILE} (the pack's default model, installed by tools/start.sh; it is "
    "trained only on the toy world of drawn characters at 64 px crops, so on real faces the mouth region "
    "comes out drawn-looking), with its VAE inside the file, and "
    f"models/whisper/{WHISPER_FOLDER}/ (a transformers Whisper folder). With a trained SayAnything model: pick "
    "it in SayAnything Model Loader and pick your svd_xt.safetensors (models/checkpoints) as svd_checkpoint."
)


def video_lipsync(object_info: dict) -> dict:
    g = Graph(object_info)
    load = g.add("LoadVideo", (0, 0), file=VIDEO_FILE)
    parts = g.add("GetVideoComponents", (0, 260))
    g.connect(load, 0, parts, "video")
    speech = g.add("SayAnythingLoadAudio", (0, 480), audio=SPEECH_FILE)
    lipsync_chain(g, images=(parts, "images"), audio=(speech, "audio"), fps=(parts, "fps"))
    return g.workflow(
        "SayAnything video lip sync, step by step (for short clips and compositing: every node's frames are in "
        "memory; long videos: sayanything_long_video.json): the lips of the face in input/" + VIDEO_FILE + " follow "
        "the speech in input/" + SPEECH_FILE + ". The video's own fps drives every node. " + MODELS_NOTE
    )


def long_video(object_info: dict) -> dict:
    g = Graph(object_info)
    load = g.add("LoadVideo", (0, 0), file=VIDEO_FILE)
    speech = g.add("LoadAudio", (0, 360), audio=SPEECH_FILE)
    model = g.add("SayAnythingModelLoader", (0, 640), model=MODEL_FILE, svd_checkpoint=VAE_FROM_MODEL_FILE)
    whisper = g.add("SayAnythingWhisperLoader", (0, 900), model=WHISPER_FOLDER)
    lipsync = g.add("SayAnythingLipSyncVideo", (420, 0))
    g.connect(model, "model", lipsync, "model")
    g.connect(whisper, "whisper", lipsync, "whisper")
    g.connect(load, 0, lipsync, "video")
    g.connect(speech, "AUDIO", lipsync, "audio")
    save = g.add("SaveVideo", (840, 0), filename_prefix="video/sayanything_long", format="mp4", codec="h264")
    g.connect(lipsync, "video", save, "video")
    return g.workflow(
        "SayAnything long video: one node lip-syncs the whole video in input/" + VIDEO_FILE + " to input/"
        + SPEECH_FILE + ", streaming frames from file to file, so minutes of video fit in memory. Settings on "
        "auto (0 / -1) come from the model file. " + MODELS_NOTE
    )


def talking_image(object_info: dict, sampler: dict | None = None) -> dict:
    g = Graph(object_info)
    image = g.add("LoadImage", (0, 0), image=PORTRAIT_FILE)
    speech = g.add("LoadAudio", (0, 360), audio=SPEECH_FILE)
    fps = g.add("PrimitiveFloat", (0, 620), title="fps", value=25.0)
    lipsync_chain(g, images=(image, "IMAGE"), audio=(speech, "AUDIO"), fps=(fps, 0), sampler=sampler)
    return g.workflow(
        "SayAnything talking still: the portrait input/" + PORTRAIT_FILE + " is repeated as a video as long "
        "as the speech (input/" + SPEECH_FILE + ") and its mouth is regenerated. " + MODELS_NOTE
    )


def user_mask(object_info: dict) -> dict:
    g = Graph(object_info)
    image = g.add("LoadImage", (0, 0), title="Portrait (right-click > Open in MaskEditor)", image=MASKED_PORTRAIT_FILE)
    speech = g.add("SayAnythingLoadAudio", (0, 360), audio=SPEECH_FILE)
    fps = g.add("PrimitiveFloat", (0, 620), title="fps", value=25.0)
    lipsync_chain(g, images=(image, "IMAGE"), audio=(speech, "audio"), fps=(fps, 0), user_mask=(image, "MASK"))
    return g.workflow(
        "SayAnything with your own mask: paint the region to regenerate in LoadImage's mask editor "
        "(right-click the node > Open in MaskEditor). With user_mask_mode 'replace' only your mask is "
        "regenerated (useful for stylised faces); 'intersect' keeps the face mask inside it; 'union' adds it. "
        "Where no face is detected (stylised characters), 'replace' frames the crop around your mask. " + MODELS_NOTE
    )


def reenact_mouth(object_info: dict) -> dict:
    g = Graph(object_info)
    target = g.add("LoadVideo", (0, 0), title="Target video (with its sound)", file=VIDEO_FILE)
    parts = g.add("GetVideoComponents", (0, 260))
    g.connect(target, 0, parts, "video")
    # 'cut': the target and its own sound are one clip, so neither is looped to the other.
    chain = lipsync_chain(g, images=(parts, "images"), audio=(parts, "audio"), fps=(parts, "fps"), fit_mode="cut")
    driving = g.add("LoadVideo", (0, 1100), title="Driving video (the mouth to copy)", file=DRIVING_VIDEO_FILE)
    driving_parts = g.add("GetVideoComponents", (0, 1360))
    g.connect(driving, 0, driving_parts, "video")
    motion = g.add("SayAnythingMouthMotionFromVideo", (800, 1100))
    g.connect(driving_parts, "images", motion, "images")
    g.connect(driving_parts, "fps", motion, "fps")
    g.connect(chain["face"], "face_track", motion, "target_track")
    g.connect(motion, "motion", chain["sampler"], "mouth_motion")
    plot = g.add("PreviewImage", (1180, 1100), title="Driving mouth motion")
    g.connect(motion, "preview", plot, "images")
    return g.workflow(
        "SayAnything mouth reenactment: the lips of the face in input/" + VIDEO_FILE + " follow the mouth of the "
        "driving video input/" + DRIVING_VIDEO_FILE + " (SayAnything Mouth Motion from Video, moved onto the "
        "target's mouth), with the target's own sound as audio and in the output. The driving video must last as "
        "long as the target (it is resampled to the target's fps). Needs a SayAnything model with a mouth-motion "
        "input (unet.motion_channels > 0); a model without one stops with a message. " + MODELS_NOTE
    )


def exaggerate_motion(object_info: dict) -> dict:
    g = Graph(object_info)
    load = g.add("LoadVideo", (0, 0), file=VIDEO_FILE)
    parts = g.add("GetVideoComponents", (0, 260))
    g.connect(load, 0, parts, "video")
    speech = g.add("SayAnythingLoadAudio", (0, 480), audio=SPEECH_FILE)
    chain = lipsync_chain(g, images=(parts, "images"), audio=(speech, "audio"), fps=(parts, "fps"))
    motion = g.add("SayAnythingMouthMotionFromAudio", (800, 1100), model=MOTION_MODEL_FILE)
    g.connect(chain["whisper"], "whisper", motion, "whisper")
    g.connect(chain["fit"], "audio", motion, "audio")
    g.connect(parts, "fps", motion, "fps")
    g.connect(chain["fit"], "frame_count", motion, "frame_count")
    g.connect(chain["face"], "face_track", motion, "target_track")
    edit = g.add("SayAnythingMouthMotionEdit", (1180, 1100), title="Mouth Motion Edit (gain 1.5)", gain=1.5)
    g.connect(motion, "motion", edit, "motion")
    g.connect(edit, "motion", chain["sampler"], "mouth_motion")
    plot = g.add("SayAnythingMouthMotionPreview", (1560, 1100))
    g.connect(edit, "motion", plot, "motion")
    g.connect(motion, "motion", plot, "compare")
    show = g.add("PreviewImage", (1940, 1100), title="Edited (motion) against predicted (compare)")
    g.connect(plot, "preview", show, "images")
    return g.workflow(
        "SayAnything with exaggerated articulation: the lips' motion is predicted from the speech in input/"
        + SPEECH_FILE + " (SayAnything Mouth Motion from Audio, models/sayanything_motion/" + MOTION_MODEL_FILE
        + ", made by `python -m lipsync_core train-motion`), made 50 % bigger (Mouth Motion Edit, gain 1.5) and "
        "given to the sampler; the preview plots it against the prediction. Needs a SayAnything model with a "
        "mouth-motion input (unet.motion_channels > 0). " + MODELS_NOTE
    )


def style_reference(object_info: dict) -> dict:
    g = Graph(object_info)
    load = g.add("LoadVideo", (0, 0), title="Video to dub", file=VIDEO_FILE)
    parts = g.add("GetVideoComponents", (0, 260))
    g.connect(load, 0, parts, "video")
    speech = g.add("SayAnythingLoadAudio", (0, 480), title="New speech", audio=SPEECH_FILE)
    chain = lipsync_chain(g, images=(parts, "images"), audio=(speech, "audio"), fps=(parts, "fps"))
    # The reference: another clip of the same speaker talking, with its own sound.
    clip = g.add("LoadVideo", (0, 1100), title="Style reference: the speaker talking", file=VIDEO_FILE)
    clip_parts = g.add("GetVideoComponents", (0, 1360))
    g.connect(clip, 0, clip_parts, "video")
    style = g.add("SayAnythingStyleReference", (800, 1100))
    g.connect(chain["model"], "model", style, "model")
    g.connect(chain["whisper"], "whisper", style, "whisper")
    for name in ("images", "audio", "fps"):
        g.connect(clip_parts, name, style, name)
    g.connect(style, "style", chain["sampler"], "style")
    return g.workflow(
        "SayAnything with a speaking-style reference: the lips of input/" + VIDEO_FILE + " follow the speech in "
        "input/" + SPEECH_FILE + " the way the speaker in the reference clip speaks (how wide, how round, how "
        "crisp). Load a clip of the same person talking, with its own sound, into the lower Load Video (here the "
        "demo video stands in); its stretch with the most speech is used (about 2 s for the default model). "
        "style_strength on the Sampler weighs it (0 = none). Needs a model trained with a style reference. "
        + MODELS_NOTE
    )


def musetalk_video_lipsync(object_info: dict) -> dict:
    g = Graph(object_info)
    load = g.add("LoadVideo", (0, 0), file=VIDEO_FILE)
    speech = g.add("LoadAudio", (0, 360), audio=SPEECH_FILE)
    model = g.add("SayAnythingModelLoader", (0, 640), title="Model Loader (MuseTalk 1.5)", model=MUSETALK_UNET_FILE,
                  svd_checkpoint=MUSETALK_VAE_FILE)
    whisper = g.add("SayAnythingWhisperLoader", (0, 900), title="Whisper Loader (multilingual tiny)",
                    model=MUSETALK_WHISPER_FOLDER)
    lipsync = g.add("SayAnythingLipSyncVideo", (420, 0))
    g.connect(model, "model", lipsync, "model")
    g.connect(whisper, "whisper", lipsync, "whisper")
    g.connect(load, 0, lipsync, "video")
    g.connect(speech, "AUDIO", lipsync, "audio")
    save = g.add("SaveVideo", (840, 0), filename_prefix="video/musetalk", format="mp4", codec="h264")
    g.connect(lipsync, "video", save, "video")
    return g.workflow(
        "MuseTalk 1.5 video lip sync: the lips of the face in input/" + VIDEO_FILE + " follow input/" + SPEECH_FILE
        + ", MuseTalk's UNet running inside the pack's streamed pipeline (its 256 px face box, one UNet call per 8 "
        "frames, the held mask, the feathered paste-back; frames without a face pass through). Models (see the "
        "README, MuseTalk 1.5; nothing is downloaded by the pack): models/musetalk/" + MUSETALK_UNET_FILE
        + " with musetalk.json beside it (TMElyralab/MuseTalk), models/vae/" + MUSETALK_VAE_FILE
        + " (stabilityai/sd-vae-ft-mse-original) and the multilingual Whisper tiny in models/whisper/"
        + MUSETALK_WHISPER_FOLDER + "/ (openai/whisper-tiny; tiny.en is refused). Settings on auto come from "
        "MuseTalk's defaults."
    )


WORKFLOWS = {
    "sayanything_video_lipsync.json": video_lipsync,
    "sayanything_talking_image.json": talking_image,
    "sayanything_user_mask.json": user_mask,
    "sayanything_long_video.json": long_video,
    "sayanything_reenact_mouth.json": reenact_mouth,
    "sayanything_exaggerate_motion.json": exaggerate_motion,
    "sayanything_style_reference.json": style_reference,
    "musetalk_video_lipsync.json": musetalk_video_lipsync,
}


def main() -> None:
    with tempfile.TemporaryDirectory() as base:
        server = ComfyServer(Path(base)).start()
        try:
            object_info = ComfyClient(server.url).object_info()
        finally:
            server.stop()
    out = REPO / "workflows"
    out.mkdir(exist_ok=True)
    for name, build in WORKFLOWS.items():
        (out / name).write_text(json.dumps(build(object_info), indent=1) + "\n")
        print("wrote", out / name)


if __name__ == "__main__":
    main()
