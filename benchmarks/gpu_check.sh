#!/usr/bin/env bash
# Every accelerator measurement of the DiT speed work, in one run (a GPU lease is short).
#   bash benchmarks/gpu_check.sh [OUTDIR]      # OUTDIR defaults to results/
# 1. attention JVP rule numerics and speed on the device (results/attention_check.json);
# 2. the training-step table (results/dit_step_gpu.json), rows in order of importance,
#    later ones skipped past BUDGET seconds.
set -u
OUTDIR=${1:-results}
BUDGET=${BUDGET:-330}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv 2>&1 | tee "$OUTDIR/gpu_log.txt"
python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__)" 2>&1 | tee -a "$OUTDIR/gpu_log.txt"
timeout 60 python3 benchmarks/attention_check.py --out "$OUTDIR/attention_check.json" 2>&1 | grep -v Warning | tee -a "$OUTDIR/gpu_log.txt"
python3 benchmarks/dit_step.py --device --budget "$BUDGET" --out "$OUTDIR/dit_step_gpu.json" 2>&1 | grep -v "Warning\|warn(" | tee -a "$OUTDIR/gpu_log.txt"
