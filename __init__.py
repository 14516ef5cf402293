"""ComfyUI entry point of the SayAnything lip-sync pack.

ComfyUI imports this folder by file path and awaits ``comfy_entrypoint()`` (V3 API). The node
modules are imported only then, so importing this file needs neither ComfyUI nor any model
library (pytest imports it as the checkout's root package).
"""


async def comfy_entrypoint():
    from .nodes import comfy_entrypoint as nodes_entrypoint

    return await nodes_entrypoint()
