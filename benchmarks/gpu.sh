#!/usr/bin/env bash
# Refresh every GPU speed figure with one command (about 6 minutes on one H100/H200).
#
#   bash benchmarks/gpu.sh            # from the repository root, on a CUDA machine
#   bash benchmarks/gpu.sh --tiny     # CPU smoke run at toy sizes (CI; figures mean nothing)
#
# Installs the project without network (editable, no dependencies), then runs
# benchmarks/gpu_speed.py (eager vs CUDA-graph steps, the bf16 matmul ceiling, every model,
# AESM² and SUPERMOE-style before/after grouping, a streamed memory-mapped epoch) and the
# GPU-marked tests. Figures go to $OUT if set, else benchmarks/gpu-results/, as one JSON file
# per section plus results.md, and are printed. Hard time limits keep the whole run within
# budget; a section cut short keeps what it measured (<section>.partial.json).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${OUT:-benchmarks/gpu-results}
mkdir -p "$DEST"
TINY=()
BUDGET=230   # seconds after which gpu_speed.py starts no new measurement
LIMIT=280    # hard stop of gpu_speed.py
TESTS_LIMIT=60
if [ "${1:-}" = "--tiny" ]; then
  TINY=(--tiny)
  BUDGET=600
  LIMIT=900
fi
started=$(date +%s)
echo "== gpu.sh: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), output $DEST"

if [ ${#TINY[@]} -eq 0 ]; then
  echo "== install (no network): $PY -m pip install --no-deps --no-build-isolation -e ."
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -3 \
    || echo "== install FAILED (continuing with what is installed)"
  "$PY" -c "import torch; print('== torch', torch.__version__, 'CUDA', torch.version.cuda, \
'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
fi

echo "== benchmarks/gpu_speed.py (budget ${BUDGET}s, hard limit ${LIMIT}s)"
timeout --signal=INT --kill-after=10 "$LIMIT" \
  "$PY" benchmarks/gpu_speed.py "${TINY[@]}" --budget "$BUDGET" --out "$DEST"
echo "== gpu_speed.py exit status $?"

if [ ${#TINY[@]} -eq 0 ]; then
  echo "== GPU-marked tests: pytest -m gpu (limit ${TESTS_LIMIT}s)"
  timeout --kill-after=5 "$TESTS_LIMIT" "$PY" -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors tests \
    2>&1 | tee "$DEST/pytest-gpu.txt" | tail -15
fi

if [ ${#TINY[@]} -eq 0 ]; then
  echo "== how large a model trains: benchmarks/scaling_size.py (limit 60s)"
  timeout --kill-after=5 60 "$PY" benchmarks/scaling_size.py --device cuda --precision bf16 \
    --factors 1,4,8,16,24 --batch-size 4096 --steps 10 --warmup 2 --json "$DEST/scaling_size.json"
fi

echo "== results ($DEST/results.md)"
"$PY" benchmarks/gpu_speed.py --report --out "$DEST"
echo "== gpu.sh done in $(( $(date +%s) - started )) s"
