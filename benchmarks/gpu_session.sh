#!/usr/bin/env bash
# One GPU lease: the CUDA checks and the benchmarks of issues 2 and 6, most important first.
#   bash benchmarks/gpu_session.sh            (results under $OUT, default benchmarks/gpu_out)
# Each step has its own time limit, so a slow or broken step costs only its own results; the
# throughput benchmark writes its JSON after every mode. Runs from the repository root, with the
# source on PYTHONPATH (the device machine has torch but cannot install this package's extras).
set -u
OUT=${OUT:-benchmarks/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
LOG=$OUT/session.log
PY=${PY:-python3}

step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2 start rc
    shift 2
    echo "== $name (limit ${limit} s): $*" | tee -a "$LOG"
    start=$(date +%s)
    timeout "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    echo "== $name rc=$rc in $(( $(date +%s) - start )) s" | tee -a "$LOG"
}

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } 2>&1 | tee -a "$LOG"

CONFIG=${CONFIG:-configs/v1.yaml} LATENT=${LATENT:-128} BATCH=${BATCH:-8}   # CPU smoke run: tiny, 8, 2
V1="--config $CONFIG --latent $LATENT --set train.grad_accum=1"
step gpu_check 120 $PY benchmarks/gpu_check.py --json "$OUT/gpu_check.json"
step model_step 120 $PY benchmarks/model_step.py --config "$CONFIG" --resolution $((LATENT * 8)) --batch "$BATCH" \
    --json "$OUT/model_step.json"
step train_eager 220 $PY benchmarks/train_throughput.py $V1 --steps 3 --warmup 1 --find-max-batch \
    --micro-batch max --max-batch-cap 64 --modes plain,ckpt --json "$OUT/train_eager.json"
MB=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['max_micro_batch']['checkpointing=False'])" \
     "$OUT/train_eager.json" 2>/dev/null || echo 8)
step train_compile 180 $PY benchmarks/train_throughput.py $V1 --steps 3 --warmup 2 --micro-batch "$MB" \
    --modes compile --json "$OUT/train_compile.json"
step model_step_compile 120 $PY benchmarks/model_step.py --config "$CONFIG" --resolution $((LATENT * 8)) \
    --batch "$BATCH" --compile --json "$OUT/model_step_compile.json"

echo "== summary" | tee -a "$LOG"
grep -h "^|\|^dispatch\|^model:\|passed\|FAILED\|^MoE time\|^measured\|^device\|largest\|peak GiB =\|rc=" "$LOG"
