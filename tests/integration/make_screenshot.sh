#!/usr/bin/env bash
# Regenerate docs/images/two-object-template.png, the README's picture: the browser test's in-depth
# scenario on frontend 1.58.1 (classic) saves it after the two-object template's first run.
#   COMFYUI_PATH=/path/to/ComfyUI-0.33-or-later tests/integration/make_screenshot.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
OIR_README_SCREENSHOT=1 python -m pytest -q -p no:cacheprovider \
  "tests/integration/test_browser.py::test_chart_draws_and_steers_the_search[1.58.1-classic]"
ls -l docs/images/two-object-template.png
