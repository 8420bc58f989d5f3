#!/bin/bash
# Device call 2 (see tools/gpu/README.md): waits for the trainer start.sh began, copies the final
# checkpoint to $OUT, then evaluates it with diffusers on the GPU for the time left in the call.
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
W=/tmp/w; limit=${LIMIT_S:-500}
[ -f $W/pid ] || { echo "no trainer on this machine"; exit 1; }
while kill -0 $(cat $W/pid) 2>/dev/null && [ $SECONDS -lt $limit ]; do sleep 5; done
bash "$(dirname "$0")/pack.sh"
grep -E "sensitivity|checkpoint|done|rror" $W/kinema-tiny.scratch/train_log.txt | tail -12
left=$((585 - SECONDS))
[ $left -gt 30 ] && timeout $left python3 tools/eval_motion.py --model $W/kinema-tiny --images ${EVAL_IMAGES:-5} --device cuda \
    --flicker-pairs 2 --json $OUT/eval.json 2>&1 | grep -v Warning | tee $OUT/eval.txt | tail -20
