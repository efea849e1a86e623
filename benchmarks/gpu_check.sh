#!/usr/bin/env bash
# Every accelerator measurement of the DiT speed work, in one run (a GPU lease is short).
#   bash benchmarks/gpu_check.sh [OUTDIR] [PLAN]     # OUTDIR defaults to results/benchmarks/, PLAN main
#   (PLAN: main, second, extra, next = the open goals: MeanFlow with the bf16 JVP rule, XL/2 at 256)
# 1. attention JVP rule numerics and speed on the device (attention_check.json);
# 2. flowjax's training-step table (dit_step_gpu.json), rows in order of importance, later
#    ones skipped past BUDGET seconds; JAX may take 95% of the GPU memory;
# 3. the PyTorch rows in a separate process (JAX on the CPU there, so torch has the GPU);
# 4. the any-resolution rows (anyres_step_gpu.json): FiTv2-XL/2, Next-DiT and DiT-XL/2 steps,
#    FiTv2 on a mixed-size token batch (skip with SKIP_ANYRES=1; ANYRES_BUDGET seconds).
set -u
OUTDIR=${1:-results/benchmarks}
PLAN=${2:-main}
BUDGET=${BUDGET:-330}
TORCH_BUDGET=${TORCH_BUDGET:-150}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1 | tee -a "$OUTDIR/gpu_log.txt"
if [ "${SKIP_ATTN:-0}" = 0 ]; then
  timeout 60 python3 benchmarks/attention_check.py --out "$OUTDIR/attention_check.json" 2>&1 | grep -v Warning | tee -a "$OUTDIR/gpu_log.txt"
fi
python3 benchmarks/dit_step.py --device --no-torch --plan "$PLAN" --append --budget "$BUDGET" --out "$OUTDIR/dit_step_gpu.json" 2>&1 | grep -v "Warning\|warn(\|bfc_allocator\|memory fragmentation\|Current allocation" | tee -a "$OUTDIR/gpu_log.txt"
JAX_PLATFORMS=cpu python3 benchmarks/dit_step.py --device --plan none --append --budget "$TORCH_BUDGET" --out "$OUTDIR/dit_step_gpu.json" 2>&1 | grep -v "Warning\|warn(" | tee -a "$OUTDIR/gpu_log.txt"
if [ "${SKIP_ANYRES:-0}" = 0 ]; then
  python3 benchmarks/anyres_step.py --device --budget "${ANYRES_BUDGET:-240}" --out "$OUTDIR/anyres_step_gpu.json" 2>&1 | grep -v "Warning\|warn(\|bfc_allocator" | tee -a "$OUTDIR/gpu_log.txt"
fi
