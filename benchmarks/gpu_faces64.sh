#!/usr/bin/env bash
# Issue 14, part 4: faces at 64x64 for about 8 minutes of training on one GPU, with SWD, a grid
# and the run's images/second; FID afterwards on the CPU (the Inception file, 87 MB, is larger
# than what can travel to the device machine).
#
# Here, first (CPU): make the dataset inside the checkout, in a git-ignored folder:
#   python -m zipfile -e ../shared/data/celeba-6k/img_align_celeba-6k.zip /tmp/celeba
#   progan dataset create /tmp/celeba runs-data/celeba64.zip --resolution 64
# Device call (see /work/.library/device): carry ["runs-data/celeba64.zip"], timeout_s 660,
#   command: bash benchmarks/gpu_faces64.sh
# Then, here: progan metrics <returned snapshot> --data runs-data/celeba64.zip --metrics fid
#   --num-images 10000   (and record everything in docs/RESULTS.md)
set -euo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/device.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/device.txt"
start=$(date +%s)
python3 -m progan train --data runs-data/celeba64.zip --outdir /tmp/runs --preset small \
    --kimg 100000 --max-minutes 8 --phase-kimg 150 --tick-kimg 20 --snapshot-ticks 5 \
    --no-progress 2>&1 | tee "$OUT/train.log"
echo "train wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/device.txt"
run=$(ls -d /tmp/runs/*/ | head -1)
python3 -m progan generate "$run" --seeds 0-63 --grid "$OUT/faces64-samples.png"
python3 -m progan metrics "$run" --data runs-data/celeba64.zip --metrics swd,ms-ssim \
    --num-images 6000 --json "$OUT/faces64-metrics.json" --quiet
cp "$run/log.jsonl" "$OUT/log.jsonl"
cp "$run/config.json" "$OUT/config.json"
cp "$(ls "$run"/snapshot-*.safetensors | tail -1)" "$OUT/faces64-snapshot.safetensors"
python3 - "$OUT/log.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
last = rows[-1]
by_res = {}
for r in rows:
    by_res.setdefault(r["resolution"], []).append(r["images_per_sec"])
print("kimg", last["kimg"], "seconds", last["seconds"])
for res, v in sorted(by_res.items()):
    print(f"{res}x{res}: {sum(v) / len(v):.0f} img/s (mean of {len(v)} ticks)")
PY
