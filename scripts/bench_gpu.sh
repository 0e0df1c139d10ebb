#!/usr/bin/env bash
# The accelerator benchmarks of docs/PERFORMANCE.md in one bounded run: train steps against PyTorch
# (bench.py), the HMT-Net VOC-LT recipe end to end with both input pipelines (bench_recipe.py) and the
# image pipeline with the on-device rows (bench_images.py).  Logs and JSON go to OUT_DIR.
#
#   pip install -e '.[bench]'          # torch + sklearn next to a CUDA (or TPU) jax
#   bash scripts/bench_gpu.sh OUT_DIR [BUDGET_S]
#
# BUDGET_S (default 540) bounds the whole run: bench.py gets about half of it (rows it cannot start in
# time are listed as skipped), the recipe a third (it stops after --steps if the recipe would not fit),
# the image pipeline the rest (RECIPE_STEPS, default 300, sets the recipe's timed steps per pipeline).  Every part writes its JSON as it goes, so a run cut short keeps what
# it measured.  Needs the tiles_voc_lt inputs (the mnist_5k asset, fetched by ltjax.assets or found in
# $LTJAX_CACHE_DIR).
set -uo pipefail
OUT_DIR=${1:?usage: bash scripts/bench_gpu.sh OUT_DIR [BUDGET_S]}
BUDGET=${2:-540}
mkdir -p "$OUT_DIR"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true) > "$OUT_DIR/device.txt"

B1=$(( BUDGET / 2 ))
timeout $(( B1 + 30 )) python scripts/bench.py --real-devices --budget-s "$B1" --json "$OUT_DIR/bench.json" \
  --sections step,hmt,eval,mlp,cssfe,ldrnet,comic --batch-sizes 32 128 256 --dtypes float32 bfloat16 --steps 30 --warmup 5 \
  --hmt-batch-sizes 32 256 --compile-batch-sizes 256 > "$OUT_DIR/bench.log" 2>&1
echo "bench.py rc $? at $(( $(date +%s) - T0 )) s" | tee -a "$OUT_DIR/bench.log"

B2=$(( $(left) * 2 / 3 ))
# 300 timed steps per pipeline (of the recipe's 976); the table projects the whole recipe from them
timeout "$B2" python scripts/bench_recipe.py --real-devices --workers 8 --steps "${RECIPE_STEPS:-300}" \
  --json "$OUT_DIR/recipe.json" > "$OUT_DIR/recipe.log" 2>&1
echo "bench_recipe.py rc $? at $(( $(date +%s) - T0 )) s" | tee -a "$OUT_DIR/recipe.log"

B3=$(left)
if [ "$B3" -gt 20 ]; then
  # 1,024 images: with 8 worker processes a short epoch is mostly served from their read-ahead
  timeout "$B3" python scripts/bench_images.py --real-devices --images 1024 --sizes 224 --storages files \
    --workers 0 8 --json "$OUT_DIR/images.json" > "$OUT_DIR/images.log" 2>&1
  echo "bench_images.py rc $? at $(( $(date +%s) - T0 )) s" | tee -a "$OUT_DIR/images.log"
fi
tail -n 40 "$OUT_DIR/bench.log"; tail -n 12 "$OUT_DIR/recipe.log"; tail -n 30 "$OUT_DIR/images.log" 2>/dev/null
