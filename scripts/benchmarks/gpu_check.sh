#!/usr/bin/env bash
# The GPU check (scripts/benchmarks/gpu_check.py): the selective-scan paths against each other and fusion
# timings with each, on a CUDA machine, in under 5 minutes, installing nothing.
#   scripts/benchmarks/gpu_check.sh               # CUDA machine
#   scripts/benchmarks/gpu_check.sh --cpu-smoke   # tiny sizes on the CPU under Triton's interpreter
# Python: $PYTHON, else the project's .venv, else python3 (whichever has a CUDA torch there).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]] && { [[ " $* " == *" --cpu-smoke "* ]] \
      || .venv/bin/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; }; then
    PY=.venv/bin/python
  else
    PY=python3
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 290 "$PY" -u scripts/benchmarks/gpu_check.py "$@"
