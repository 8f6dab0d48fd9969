"""OIR for ComfyUI: Object-aware Inversion and Reassembly (Yang et al., ICLR 2024).

ComfyUI loads this folder as a package and calls :func:`comfy_entrypoint`; ``WEB_DIRECTORY`` serves
the frontend extension in ``web/``. The engine lives in ``oir_core`` (plain PyTorch, no ComfyUI).
"""

WEB_DIRECTORY = "./web"

if not __package__:
    # Imported as a plain module, not as the package ComfyUI makes of the folder: pytest does this
    # with the repository root when the clone's folder name is not an identifier ("oir-edit").
    # There is no package to import the nodes relative to, and nothing here needs them.
    async def comfy_entrypoint():  # type: ignore[no-untyped-def]
        raise ImportError("OIR's nodes load only when ComfyUI imports this folder as a package")

else:
    try:
        from .nodes import comfy_entrypoint
    except ImportError as error:  # imported outside ComfyUI (e.g. by tools scanning the repository)
        if "comfy" not in str(error):
            raise
        _IMPORT_PROBLEM = str(error)

        async def comfy_entrypoint():  # type: ignore[no-untyped-def]
            raise ImportError(f"OIR's nodes need ComfyUI (comfy_api) to be importable: {_IMPORT_PROBLEM}")


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
