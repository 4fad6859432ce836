#!/usr/bin/env bash
# GPU smoke test: the default audit (built-in SmolLM2-135M, text sets, ga and npo) on one CUDA
# device in bfloat16, then each stage's seconds and the peak GPU memory torch allocated.
#
#   bash benchmarks/gpu_smoke.sh [OUT_DIR]      # default runs/gpu-smoke (replaced if present)
#
# It measures speed and memory: at the default lr 1e-5, bfloat16 training rounds most unlearning
# updates away (measured on CPU, docs/howto/scale.md), so read its verdicts with that in mind.
# Without CUDA it refuses in one line and exits 2. Its numbers are not measured yet (no GPU was
# available when it was written): see docs/howto/scale.md. PYTHON picks the interpreter
# (default .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
exec "$python" - "${1:-runs/gpu-smoke}" <<'PY'
import json
import sys
import time
from pathlib import Path

import torch

if not torch.cuda.is_available():
    print(f"gpu_smoke: no CUDA device visible to torch {torch.__version__} (torch.cuda.is_available() is False); "
          "run it on a GPU machine with a CUDA build of torch", file=sys.stderr)
    sys.exit(2)

from unlearn_lens.cli import main

out = Path(sys.argv[1])
torch.cuda.reset_peak_memory_stats()
start = time.perf_counter()
status = main(["audit", "--device", "cuda", "--dtype", "bfloat16", "--out", str(out), "--force"])
wall = time.perf_counter() - start
if status != 0:
    sys.exit(status)
results = json.loads((out / "results.json").read_text())
print(f"\nGPU smoke: {torch.cuda.get_device_name()}, torch {torch.__version__}, bfloat16, {out}")
for method, result in results["methods"].items():
    stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result["seconds"].items())
    print(f"  {method}: {stages}")
print(f"  whole audit (model load, data, both methods, reports): {wall:.1f} s")
print(f"  peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated, "
      f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved")
PY
