#!/usr/bin/env bash
# Issue 16 on one GPU: the fast training step against benchmarks' reference step (standing in
# for the ports; ../shared/ANCHORS.md). One call, sized for under 8 minutes on an H100/H200;
# every stage has its own time limit and writes its JSON to $OUT before the next starts, so a
# stage that runs long or fails costs only itself.
#
#   OUT=/some/folder bash benchmarks/gpu_issue16.sh
#
# (Smoke test on a CPU: DEVICE=cpu EXTRA="--preset tiny --resolutions 8" with DB_EXTRA set to
# double_backward.py's small --cases; EXTRA/DB_EXTRA go last, so they override.)
#
# Stages (time limits in seconds; 480 in all, about 6.5 minutes expected, see
# docs/PERFORMANCE.md "Issue 16: the fast step"):
# 1-3. throughput.py at 32+64 (80), 128 (75), 256 (95): paper widths and minibatches (16 at
#    256 as well, the minibatch of the target and of ANCHORS.md; the preset has 14), the
#    reference step + native vs explicit convolutions in tf32 / bf16, NCHW / channels_last, and
#    explicit + bf16 + the lazy penalty; 3 warm-up + 15 timed steps; FLOPs and a profile (top 20
#    ops by device time) of every row at 128 and 256, so the best variant's is among them.
# 4. throughput.py at 512 and 1024 (100): memory within the GPU at every resolution and the img/s
#    the projection of the whole `paper` schedule (19,000 kimg) needs; 4 variants, 8 steps.
# 5. throughput.py at 128 with the trainer's torch.compile (70; minutes of compiling may not fit:
#    then its JSON holds nothing and the log says so).
# 6. double_backward.py (60): the D step alone, baseline vs native vs explicit, tf32 and bf16+NHWC.
#
# Targets (issue 16): progan >= 313 img/s at 128x128/16 and >= 160 img/s at 256x256/16 with the
# paper's widths, i.e. about 2.5x the reference rows of the same call.
set -u
OUT=${OUT:?set OUT to the output folder}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}
DB_EXTRA=${DB_EXTRA:-}
cd "$(dirname "$0")/.."
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>&1 || true
python -c "import torch; print(torch.__version__, torch.version.cuda)" > "$OUT/torch.txt" 2>&1

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    echo "=== $name (limit ${limit}s) ==="
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "=== $name: rc $rc, $((SECONDS - t0)) s ===" >> "$OUT/$name.log"
    tail -n 40 "$OUT/$name.log"
}

V16=tf32,bf16,channels_last,bf16+channels_last,explicit,explicit+bf16,explicit+channels_last
V16=$V16,explicit+bf16+channels_last,explicit+bf16+lazy-gp4
TP="python benchmarks/throughput.py --device $DEVICE --peak-seconds 1"

stage throughput-32-64 80 $TP --resolutions 32,64 --variants "$V16" --warmup 3 --steps 15 \
    --no-flops --json "$OUT/throughput-32-64.json" $EXTRA

stage throughput-128 75 $TP --resolutions 128 --variants "$V16" --warmup 3 --steps 15 \
    --profile 20 --json "$OUT/throughput-128.json" $EXTRA

stage throughput-256 95 $TP --resolutions 256 --batch 16 --variants "$V16" --warmup 3 --steps 15 \
    --profile 20 --json "$OUT/throughput-256.json" $EXTRA

stage throughput-512-1024 100 $TP --resolutions 512,1024 --warmup 2 --steps 8 --no-flops \
    --variants tf32,explicit,explicit+bf16,explicit+bf16+channels_last \
    --json "$OUT/throughput-512-1024.json" $EXTRA

stage throughput-compile 70 $TP --resolutions 128 --warmup 3 --steps 15 --no-reference \
    --variants explicit,explicit+compile --json "$OUT/throughput-compile.json" $EXTRA

stage double-backward 60 bash -c "
    python benchmarks/double_backward.py --device $DEVICE --tf32 --steps 10 --warmup 3 \
        --repeats 2 --top 15 --json '$OUT/double_backward-tf32.json' $DB_EXTRA &&
    python benchmarks/double_backward.py --device $DEVICE --amp bf16 --channels-last --steps 10 \
        --warmup 3 --repeats 2 --top 15 --json '$OUT/double_backward-bf16-cl.json' $DB_EXTRA"
echo "total ${SECONDS} s"
