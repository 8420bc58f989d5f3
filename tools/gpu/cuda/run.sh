#!/bin/bash
# Runs on the GPU machine from the repository root: selftest, then the bundled model on cpu and cuda.
cd "$(dirname "$0")/../.."
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:$LD_LIBRARY_PATH
export KINEMA_CUDA_CACHE=/tmp/kinema-cuda-cache
mkdir -p $KINEMA_CUDA_CACHE; [ -f .gpu/cuda/cache.tgz ] && tar -xzf .gpu/cuda/cache.tgz -C $KINEMA_CUDA_CACHE
command -v ffmpeg >/dev/null || export KINEMA_FFMPEG=$PWD/.gpu/cuda/ffmpeg
gunzip -c .gpu/cuda/kinema.gz > /tmp/kinema && chmod +x /tmp/kinema
K=/tmp/kinema
if ldd $K | grep -q "not found"; then export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$PWD/.gpu/cuda/lib; fi
ldd $K | grep -E "not found|openblas|gfortran"
stage=${1:-all}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
date -u
if [[ $stage == all || $stage == selftest ]]; then
  timeout 300 $K selftest --device cuda 2>&1 | tee $OUT/selftest.txt
  echo "--- second run (module from the disk cache):"
  timeout 120 $K selftest --device cuda --precision f16 2>&1 | head -3
fi
if [[ $stage == all || $stage == generate ]]; then
  mkdir -p /tmp/gen; D=/tmp/gen
  for d in cpu cuda:f32 cuda:f16 cuda:bf16; do
    dev=${d%%:*}; prec=${d#*:}; [[ $prec == $d ]] && prec=f16
    name=${d/:/_}
    echo "== $name"; timeout 300 $K generate --device $dev --precision $prec \
      --image examples/coffee.png --prompt 'steam rises from the cup' --seed 7 \
      --output $D/$name.npy --report $D/$name.json 2>&1 | tail -5
  done
  python3 .gpu/cuda/compare.py $D/cpu.npy $D/cuda_f32.npy $D/cuda_f16.npy $D/cuda_bf16.npy 2>&1
  for f in $D/*.json; do python3 -c "import json,sys; r=json.load(open('$f')); print('$f', {k: r.get(k) for k in ['device','compute_type','measured_seconds','unet_seconds_per_step','measured_peak_bytes','predicted_peak_bytes','cuda_fixed_overhead_bytes','cuda_pool_reserved_peak_bytes']})"; done
  cat $D/*.json > $OUT/reports.json
fi
if [[ $stage == all || $stage == bench ]]; then
  for shape in ${SHAPES:-512x512x16 768x768x24}; do
    IFS=x read w h f <<< "$shape"
    echo "== bench $shape"
    timeout ${BENCH_TIMEOUT:-200} $K generate --device cuda --precision f16 --model $PWD/.gpu/cuda/configs --random-weights \
      --image examples/coffee.png --prompt 'steam rises from the cup' --seed 7 --width $w --height $h --frames $f \
      --steps ${STEPS:-5} --quiet --output /tmp/gen/bench_$shape.npy --report /tmp/gen/bench_$shape.json 2>&1 | tail -30
    python3 -c "import json; r=json.load(open('/tmp/gen/bench_$shape.json')); print({k: r.get(k) for k in ['measured_seconds','unet_seconds_per_step','phase_seconds','measured_peak_bytes','predicted_peak_bytes','cuda_fixed_overhead_bytes','cuda_pool_reserved_peak_bytes','cuda_pool_used_peak_bytes','cuda_used_after_context_bytes']})"
    cp /tmp/gen/bench_$shape.json $OUT/ 2>/dev/null
  done
fi
tar -czf $OUT/cache.tgz -C $KINEMA_CUDA_CACHE . 
