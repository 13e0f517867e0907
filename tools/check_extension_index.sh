#!/usr/bin/env bash
# The Slicer ExtensionsIndex's checks on this extension, offline (docs/slicer.md, "Publishing"):
#   tools/check_extension_index.sh PATH/TO/ExtensionsIndex
# The index's checker needs Python >= 3.12 (PYTHON, default python3) and the index's
# scripts/requirements.txt, installed once into build/extensions-index-venv.
set -euo pipefail
index=${1:?usage: tools/check_extension_index.sh PATH/TO/ExtensionsIndex}
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/build/extensions-index-venv
python=${PYTHON:-python3}
if [ ! -e "$venv/.installed" ]; then
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 12))' \
        || { echo "the index's checker needs Python >= 3.12: set PYTHON" >&2; exit 2; }
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet -r "$index/scripts/requirements.txt"
    touch "$venv/.installed"
fi
exec "$venv/bin/python" "$root/tools/check_extension_index.py" "$index"
