"""OIR for ComfyUI: Object-aware Inversion and Reassembly (Yang et al., ICLR 2024).

ComfyUI loads this folder as a package and calls :func:`comfy_entrypoint`; ``WEB_DIRECTORY`` serves
the frontend extension in ``web/``. The engine lives in ``oir_core`` (plain PyTorch, no ComfyUI).
"""

WEB_DIRECTORY = "./web"

try:
    from .nodes import comfy_entrypoint
except ImportError as error:  # imported outside ComfyUI (e.g. by tools scanning the repository)
    if "comfy" not in str(error):
        raise
    _IMPORT_PROBLEM = str(error)

    async def comfy_entrypoint():  # type: ignore[no-untyped-def]
        raise ImportError(f"OIR's nodes need ComfyUI (comfy_api) to be importable: {_IMPORT_PROBLEM}")


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
