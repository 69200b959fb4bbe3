#!/usr/bin/env bash
# The prepared run for a lent GPU (issue 16): one command, results under $OUT.
#
#   mkdir -p .data-device/MNIST/raw && cp .data/MNIST/raw/*-ubyte .data-device/MNIST/raw/
#   run(command="DATA=.data-device bash scripts/device_treevae.sh 400", carry=[".data-device"],
#       timeout_s=540)
#
# (.data-device holds only MNIST's four uncompressed files, 55 MB: `carry` takes 64 MiB.)
#
# 1. TreeVAE's reference schedule on all 60,000 MNIST images, seed 43 (seed 42 ran on the
#    CPU), for at most SECONDS (default 400) of wall time. It saves after every epoch, so
#    what comes back is the finished checkpoint or its partial one, which
#    `python -m latentviz resume` continues anywhere (docs/TREEVAE.md). Its log has the
#    seconds per epoch of each stage: the figures that project the whole schedule's GPU time.
# 2. The bench's TreeVAE rows on the GPU (`python -m latentviz bench --only treevae`).
#
# Dry run on the CPU with tiny settings: TINY=1 OUT=/tmp/out bash scripts/device_treevae.sh 60
# $DATA (default .data) must hold MNIST in torchvision's layout (a copy of ../shared/data;
# git-ignored, so it travels only when named in `carry`).
set -u
SECONDS_RUN=${1:-400}
OUT=${OUT:-runs/device}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
DATA=${DATA:-.data}
if [ "${TINY:-0}" = 1 ]; then
    FLAGS="--schedule tiny --n-train 1024 --batch-size 64"; DEVICE=cpu
else
    FLAGS="--schedule reference --batch-size 256"; DEVICE=cuda
fi
{
    date -u; nproc
    $PY -c "import torch, sklearn, safetensors; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
} > "$OUT/environment.txt" 2>&1

timeout --signal=TERM "$SECONDS_RUN" $PY -m latentviz train --variant treevae --dataset mnist \
    --data-dir "$DATA" $FLAGS --weight-decay 1e-5 --seed 43 --no-classifiers --device "$DEVICE" \
    --out "$OUT/treevae-ref-mnist-s43.safetensors" > "$OUT/treevae-ref-mnist-s43.log" 2>&1
echo "train exit $?" >> "$OUT/environment.txt"
ls -la "$OUT" >> "$OUT/environment.txt"

if [ "${TINY:-0}" = 1 ]; then BENCH="--quick"; else BENCH=""; fi
timeout 100 $PY -m latentviz bench --only treevae --no-full-schedule --data-dir "$DATA" $BENCH > "$OUT/bench-treevae.txt" 2>&1
echo "bench exit $?" >> "$OUT/environment.txt"
