#!/usr/bin/env bash
# The GPU track: every registered model at its published size (its declared defaults) on the
# synthetic twin at 5M rows, bf16, batch 8192, early stopping on validation, 5 seeds.
#
#   bash leaderboards/gpu_track.sh             # from the repository root, on a CUDA machine
#   bash leaderboards/gpu_track.sh --tiny      # CPU smoke run at a toy size (figures mean nothing)
#
# Environment: OUT (records; default leaderboards/runs/aliexpress-synth-gpu, or a scratch
# directory with --tiny), MODELS (default all), SEEDS (default 5), ROWS (default 5000000),
# EPOCHS (default 3), PATIENCE (default 1), LIMIT (seconds, default 600), PYTHON.
#
# Runs go seed by seed (every model at seed 0, then seed 1, ...), so a track cut short by LIMIT
# still holds complete seeds. The suite skips finished runs: rerunning the script continues
# where it stopped. The records are ready to commit; `mssbench leaderboard build` renders them.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MODELS=${MODELS:-all}
SEEDS=${SEEDS:-5}
ROWS=${ROWS:-5000000}
EPOCHS=${EPOCHS:-3}
PATIENCE=${PATIENCE:-1}
LIMIT=${LIMIT:-600}
OPTS=(--device cuda --precision bf16 --batch-size 8192 --eval-batch-size 262144)
if [ "${1:-}" = "--tiny" ]; then
  ROWS=${TINY_ROWS:-4000}
  OPTS=(--device cpu --batch-size 256 --max-steps-per-epoch 2 -p embed_dim=4)
  OUT=${OUT:-$(mktemp -d)}
fi
OUT=${OUT:-leaderboards/runs/aliexpress-synth-gpu}
mkdir -p "$OUT"
started=$(date +%s)
echo "== gpu_track.sh: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "== models $MODELS, seeds $SEEDS, rows $ROWS, epochs <= $EPOCHS (patience $PATIENCE), out $OUT"
"$PY" -c "import torch; print('== torch', torch.__version__, 'CUDA', torch.version.cuda, \
'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"

status=0
for seed in $(seq 0 $((SEEDS - 1))); do
  left=$(( LIMIT - ($(date +%s) - started) ))
  if [ "$left" -le 0 ]; then
    echo "== time limit ${LIMIT}s reached before seed $seed: rerun to continue"
    status=124
    break
  fi
  echo "== seed $seed (${left}s left)"
  timeout --signal=INT --kill-after=15 "$left" "$PY" -m mssbench suite \
    --models "$MODELS" --datasets aliexpress-synth --seeds "$seed," \
    -D n_rows="$ROWS" --epochs "$EPOCHS" --patience "$PATIENCE" "${OPTS[@]}" \
    --jobs 1 --no-progress --out "$OUT"
  rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "== suite for seed $seed ended with status $rc"
    status=$rc
    [ "$rc" -eq 124 ] && break
  fi
done
echo "== records in $OUT: $(find "$OUT" -maxdepth 1 -name '*.json' | wc -l)"
echo "== gpu_track.sh done in $(( $(date +%s) - started )) s"
exit "$status"
