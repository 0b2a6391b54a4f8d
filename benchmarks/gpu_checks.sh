#!/usr/bin/env bash
# Every GPU check and benchmark in one run, for a session that is lent a GPU (the device tool
# runs this in the repository root). Writes everything to ${OUT:-gpu_results}/ and a summary
# table in gpu_results/all.txt. Each step has its own time limit (510 s in all, under the
# 600 s a device command may run), so one stuck step cannot eat the whole device budget. The GPU machine has torch + CUDA, transformers and timm,
# but no network: install this package without dependencies first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.txt" 2>&1 || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python -c "import torch, transformers, timm; print(torch.__version__, torch.version.cuda, transformers.__version__, timm.__version__)" >> "$OUT/gpu.txt"

run() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  echo "== $name" | tee -a "$OUT/all.txt"
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; echo "exit $?" >> "$OUT/$name.txt"
  tail -n 12 "$OUT/$name.txt" | tee -a "$OUT/all.txt"
}

run regions_parity_cuda 60 python -m pytest -q tests/test_regions.py -k cuda
run bench_regions_cuda 60 python benchmarks/bench_regions.py --device cuda --repeats 30
run bench_model_bf16 150 python benchmarks/bench_model.py --device cuda --dtype bfloat16 --sizes base:256 huge14:64 --repeats 10
run bench_ranking_cuda 60 python benchmarks/bench_ranking.py --device cuda --dtype bfloat16 --batch-size 256
run bench_training_cuda 180 python benchmarks/bench_training.py --device cuda
run folders_cuda 150 python -m pytest -q tests/test_folders.py -k cuda
run bench_folders_cuda 150 python benchmarks/bench_folders.py --device cuda --repeats 3 --only "regions (overlays,not drawn,embed (.npy"
cat "$OUT/gpu.txt" >> "$OUT/all.txt"
