#!/usr/bin/env bash
# Builds the bundled default model and its DSeq-JEPA vs I-JEPA comparison, end to end, offline:
# data kit -> two pretraining runs with the same budget (method mixed and ijepa) -> conversion of
# the target encoders -> region quality, kNN and linear probe -> dseqjepa_hub/default_model
# (scripts/bundle_default_model.py, with scripts/default_model_notes.md appended to its card).
#
#   bash scripts/build_default_model.sh [WORK_DIR]        (default WORK_DIR: ./runs)
#
# On a 2-core CPU the two runs share the cores (one thread each) and take about an hour;
# with a GPU add `--set precision=bf16` and larger batches. Every step resumes or is skipped
# when its output exists, so the script can be re-run after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs}
DSEQ=.venv/bin/dseqjepa
CONFIG=training/configs/scenes-cpu.yaml
mkdir -p "$WORK"

[ -d "$WORK/data/scenes" ] || $DSEQ data build scenes --out "$WORK/data/scenes" --seed 0 --num-train 4000 --num-val 500 --image-size 128

for method in mixed ijepa; do
  resume=""; [ -d "$WORK/$method/checkpoints" ] && resume="--resume"
  OMP_NUM_THREADS=1 $DSEQ train --config "$CONFIG" --data "$WORK/data/scenes/train/images" \
    --output "$WORK/$method" --set method=$method $resume > "$WORK/$method.log" 2>&1 &
done
wait

for method in mixed ijepa; do
  [ -d "$WORK/models/$method" ] || $DSEQ convert "$WORK/$method" --format training --out "$WORK/models/$method" --num-heads 4
  for task in regions knn linear; do
    [ -f "$WORK/eval/$method-$task.json" ] || OMP_NUM_THREADS=1 $DSEQ eval "$WORK/models/$method" \
      --data "$WORK/data/scenes" --task "$task" --out "$WORK/eval/$method-$task.json" --device cpu
  done
done

.venv/bin/python scripts/bundle_default_model.py "$WORK/models/mixed" scripts/default_model_notes.md \
  "$WORK"/eval/mixed-{regions,knn,linear}.json
