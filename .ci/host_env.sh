#!/usr/bin/env bash
# Build a virtual environment that runs the pack inside one ComfyUI host checkout.
#   .ci/host_env.sh VENV_DIR COMFYUI_DIR "TORCH PINS"
# Installs the pinned torch first (ComfyUI's requirements never choose it), then the host's own
# requirements.txt without its torch lines, torchsde and requests (ComfyUI 0.3.64 imports it without
# listing it), and this pack with its test extras.
set -euo pipefail
venv=$1; host=$2; torch_pins=$3
root="$(cd "$(dirname "$0")/.." && pwd)"
python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
python -m pip install --quiet $torch_pins
reqs="$(mktemp)"
grep -v -E '^\s*(torch|torchvision|torchaudio)\s*([=<>~!].*)?$' "$host/requirements.txt" > "$reqs"
python -m pip install --quiet -r "$reqs" torchsde requests $torch_pins
python -m pip install --quiet -e "$root[test]" $torch_pins
rm -f "$reqs"
python - <<'PY'
import torch, sys
print(f"venv ready: python {sys.version.split()[0]}, torch {torch.__version__}")
PY
