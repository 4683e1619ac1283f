#!/usr/bin/env bash
# session-6 colour experiment: phase 1 on three synthetic-set variants, several seeds, concurrently on one GPU
# usage: bash benchmarks/synth_palette/run.sh STEPS_SHORT STEPS_LONG TRAIN_LIMIT_S
#   DATA/VARIANT/{latents,truth.jsonl} from make_data.py (+ synth/truth.jsonl copied up); VAE = TAESD-XL folder;
#   the second session-6 batch edited the job list to: wheel, wheelbig seeds 2 3 4 and old seeds 2 3, all 1100 steps
set -u
FINAL=${OUT:-/tmp/gpuout}; OUT=/tmp/gpuwork; PY=${PY:-python3}; VAE=${VAE:-.gpu/taesdxl}; DATA=${DATA:-.gpu/data}; DEV=${DEV:-cuda}
S1=${1:-1500}; S2=${2:-3000}; LIM=${3:-330}; TIERS=${TIERS:-0,1,2,3}
rm -rf "$OUT"; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
job() {  # job VARIANT SEED STEPS
    local v=$1 s=$2 n=$3 name=$1_s$2_n$3 d=/tmp/runs/$1_s$2_n$3 t0=$(date +%s)
    timeout -k 20 "$LIM" $PY -m vampdiffusion.cli train --config configs/tiny.yaml --phase 1 --data $DATA/$v/latents \
        --out $d --set train.phase1.steps=$n --set train.seed=$s --set train.sample_every=0 --set train.log_every=250 \
        --set train.ckpt_every=100000 > $OUT/$name.train.log 2>&1
    local t1=$(date +%s)
    VARIANT=$v timeout 200 $PY benchmarks/synth_palette/colour.py --model $d/model --data $DATA/$v/latents --truth $DATA/$v/truth.jsonl \
        --vae-path $VAE --n ${N:-1000} --tiers $TIERS --threads 1 --device $DEV > $OUT/$name.colour.txt 2>&1
    echo "$name $(grep -o "stopped by [A-Z]* at step [0-9]*" $OUT/$name.train.log) train_s=$((t1-t0)) eval_s=$(( $(date +%s)-t1 )) $(grep -o 'tier [0-9]: colour [0-9.]*' $OUT/$name.colour.txt | tr '\n' ' ')" >> $OUT/results.txt
}
{ date -u; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null; } > $OUT/results.txt
for v in old wheel wheelbig; do for s in 0 1; do job $v $s $S1 & done; done
job old 0 $S2 & job wheelbig 0 $S2 &
wait
mkdir -p "$FINAL"; cp $OUT/results.txt "$FINAL"/
for f in $OUT/*.colour.txt; do echo "== $f"; cat $f; done > "$FINAL"/colour_all.txt
tar czf "$FINAL"/logs.tar.gz -C $OUT .
cat $OUT/results.txt
