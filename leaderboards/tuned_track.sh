#!/usr/bin/env bash
# The tuned CPU track: every model tuned on validation with the same budget (TRIALS trials of at
# most SAMPLES training rows each, `mssbench tune`), then its best configuration rerun at 5 seeds
# (`mssbench suite --tuned`). The compact track's options otherwise (4 epochs, batch 1024, lr
# searched, embed_dim 16), so the tuned page sits beside the defaults' page of the same protocol.
#
#   bash leaderboards/tuned_track.sh                     # census-income, every model below
#   DATASET=aliexpress-synth DATA_OPTS="-D n_rows=150000" SAMPLES=420000 bash leaderboards/tuned_track.sh
#   bash leaderboards/tuned_track.sh --tiny              # CPU smoke run (figures mean nothing)
#
# Environment: DATASET (default census-income), DATA_OPTS, MODELS (space-separated, cheapest
# first; escm2 is added on any dataset but census-income), TRIALS (default 8), SAMPLES (default 235136 = the compact census budget: 58,784 rows
# x 4 epochs), SEEDS (default 5), JOBS (parallel trials and seeds, default 2; each process
# holds one model's evaluation batch: SUPERMOE-style at its widest takes about 13 GB), STUDIES (default leaderboards/tuning/DATASET), OUT (default
# leaderboards/runs/tuned/DATASET), PYTHON.
#
# Model by model: a finished study is not searched again and finished seeds are skipped, so
# rerunning the script continues where it stopped; commit STUDIES and OUT as models finish.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DATASET=${DATASET:-census-income}
DATA_OPTS=${DATA_OPTS:-}
MODELS=${MODELS:-epnet aitm shared_bottom star esmm pepnet single_task cross_stitch sarnet hmoe \
aesm ple adasparse m2m mmoe dephn m3oe hinet omoe supermoe stem}
# ESCM² needs a conversion task implying a click task: census-income has none.
[ "$DATASET" = census-income ] || case " $MODELS " in *" escm2 "*) ;; *) MODELS="$MODELS escm2" ;; esac
TRIALS=${TRIALS:-8}
SAMPLES=${SAMPLES:-235136}
SEEDS=${SEEDS:-5}
JOBS=${JOBS:-2}
STUDIES=${STUDIES:-leaderboards/tuning/$DATASET}
OUT=${OUT:-leaderboards/runs/tuned/$DATASET}
OPTS=(--epochs 4 --batch-size 1024 --device cpu)
EMBED=embed_dim=16
PLUGINS=()
if [ "${1:-}" = "--tiny" ]; then
  DATASET=tiny-synth
  PLUGINS=(mssbench.testing.plugin)
  OPTS=(--plugin mssbench.testing.plugin --epochs 2 --batch-size 128 --device cpu)
  EMBED=embed_dim=4
  TRIALS=2 SAMPLES=1024 SEEDS=2
  STUDIES=${TINY_STUDIES:-$(mktemp -d)} OUT=${TINY_OUT:-$(mktemp -d)}
  MODELS=${TINY_MODELS:-mmoe}
fi
echo "== tuned_track.sh: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "== $DATASET: $TRIALS trials x $SAMPLES rows per trial, $SEEDS seeds; studies $STUDIES, records $OUT"
# Does MODEL declare hyper-parameter KEY? The compact pages set embed_dim on the models that
# declare it (a suite-wide -p) and leave the others (SUPERMOE-style: d_model) at their defaults.
takes() {
  "$PY" -c 'import sys; from mssbench.plugins import load_registry
sys.exit(sys.argv[2] not in load_registry(sys.argv[3:]).model(sys.argv[1]).defaults)' \
    "$1" "$2" "${PLUGINS[@]}" 2>/dev/null  # an unknown model: tune below names it
}
status=0
for model in $MODELS; do
  study="$STUDIES/$model"
  fixed=()
  takes "$model" "${EMBED%%=*}" && fixed=(-p "$EMBED")
  # shellcheck disable=SC2086
  "$PY" -m mssbench tune -m "$model" -d "$DATASET" $DATA_OPTS "${OPTS[@]}" "${fixed[@]}" --trials "$TRIALS" \
    --budget-samples "$SAMPLES" --seed 0 --jobs "$JOBS" --out "$study" || { status=1; continue; }
  suite_opts=(--tuned "$study" --seeds "$SEEDS" --jobs "$JOBS" --device cpu --no-progress --out "$OUT")
  [ "${1:-}" = "--tiny" ] && suite_opts=(--plugin mssbench.testing.plugin "${suite_opts[@]}")
  "$PY" -m mssbench suite "${suite_opts[@]}" || status=1
done
exit $status
