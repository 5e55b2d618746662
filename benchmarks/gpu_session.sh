#!/usr/bin/env bash
# The GPU figures of the speed issue in one device call (`run` tool, machine nvidia-h100-x1):
#   mkdir -p data && cp ../shared/data/cifake/cifake_{train,test}_jpg.tar.gz data/    # once, here (git-ignored)
#   run: command "bash benchmarks/gpu_session.sh", carry ["data"]
# The device image has torch, torchvision, safetensors, scikit-learn, typer, rich, tqdm and pillow; the
# package runs from src/ without installing. Logs and JSON land in $OUT (returned) and benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT" benchmarks/results
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt" || true
python3 benchmarks/inference_throughput.py --iters 50 2>&1 | tee "$OUT/inference_throughput_gpu.log"
python3 benchmarks/train_speed.py --config configs/speedrun.toml --seeds 0,1,2 2>&1 | tee "$OUT/train_speed_gpu.log"
cp benchmarks/results/*.json "$OUT/" 2>/dev/null || true
