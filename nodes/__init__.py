"""ComfyUI glue for the OIR engine: V3 nodes that convert types and call one oir_core function each."""

from __future__ import annotations

from pathlib import Path

from comfy_api.latest import ComfyExtension, io

from .edit_nodes import OIREditPair, OIRGuidedPromptBuilder
from .example_inputs import install_example_inputs
from .mask_nodes import OIRPhraseMask
from .pack_info import register_pack_route
from .sampling_nodes import OIRDDIMInversion, OIRObjectReassembly, OIRParallelStepSearch
from .scoring_nodes import OIREditRegionScore, OIRLoadCLIPScorer, OIRMaskMetricScorer, register_scorer_folder
from .template_thumbnails import register_thumbnail_route

NODES: list[type[io.ComfyNode]] = [
    OIRLoadCLIPScorer,
    OIRPhraseMask,
    OIREditPair,
    OIRGuidedPromptBuilder,
    OIRDDIMInversion,
    OIRParallelStepSearch,
    OIRMaskMetricScorer,
    OIRObjectReassembly,
    OIREditRegionScore,
]


class OIRExtension(ComfyExtension):
    """Registers the OIR nodes with ComfyUI."""

    async def on_load(self) -> None:
        register_scorer_folder()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> OIRExtension:
    """ComfyUI's V3 entry point: registers models/oir_clip, installs the templates' inputs and serves
    their card pictures (the folder name is the one ComfyUI lists the templates under) and says
    which pack it is at ``/oir/pack`` (``oir-edit batch`` checks every server runs the same one)."""
    register_scorer_folder()
    install_example_inputs()
    register_thumbnail_route(Path(__file__).parents[1].name)
    register_pack_route()
    return OIRExtension()
