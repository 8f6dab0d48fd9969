"""The templates' sample inputs, put where ComfyUI's LoadImage finds them (ARCHITECTURE.md §5).

The pack ships the photographs, masks and depth map its templates name in ``example_inputs/``
(``oir_example_*.png``; licences in ``example_inputs/LICENSE.md``). LoadImage lists only the top
level of ComfyUI's input folder, so on load the pack copies every one that is missing there. A file
of the same name is never overwritten, and a read-only input folder only costs a log line: the
templates then show LoadImage's usual "missing file" until the user uploads a picture.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

EXAMPLE_INPUTS = Path(__file__).resolve().parents[1] / "example_inputs"
PATTERN = "oir_example_*.png"


def install_example_inputs(input_dir: str | Path | None = None) -> list[str]:
    """Copy the missing sample inputs into ``input_dir`` (default: ComfyUI's input folder).

    Returns:
        The file names copied (empty when all were there, or the folder is not writable).
    """
    if input_dir is None:
        import folder_paths

        input_dir = folder_paths.get_input_directory()
    target = Path(input_dir)
    copied = []
    try:
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted(EXAMPLE_INPUTS.glob(PATTERN)):
            destination = target / source.name
            if not destination.exists():
                shutil.copyfile(source, destination)
                copied.append(source.name)
    except OSError as error:
        logging.warning("OIR: could not copy the template inputs into %s (%s)", target, error)
    return copied
