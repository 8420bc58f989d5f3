#!/bin/bash
# Device call 1 (see tools/gpu/README.md): starts tools/train_tiny.py in its own session (it outlives
# this call; collect.sh picks it up), waits until it has written WANT_SAVES checkpoints or LIMIT_S
# seconds passed, and copies the newest checkpoint to $OUT. Arguments go to train_tiny.py.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
W=/tmp/w; mkdir -p $W
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, diffusers, transformers, skimage, sklearn; print(torch.__version__, diffusers.__version__, transformers.__version__, skimage.__version__, sklearn.__version__)"
setsid nohup python3 tools/train_tiny.py --out $W/kinema-tiny --tokenizer .gpu/clip-tokenizer "$@" > $W/train.out 2>&1 < /dev/null &
echo $! > $W/pid
want=${WANT_SAVES:-2}; limit=${LIMIT_S:-555}
while [ $SECONDS -lt $limit ]; do
  n=$(grep -c "checkpoint saved" $W/kinema-tiny.scratch/train_log.txt 2>/dev/null); n=${n:-0}
  [ "$n" -ge "$want" ] && break
  kill -0 $(cat $W/pid) 2>/dev/null || { echo "trainer exited"; break; }
  sleep 5
done
bash "$(dirname "$0")/pack.sh"
grep -E "sensitivity|separation|checkpoint|rror" $W/kinema-tiny.scratch/train_log.txt | tail -20
