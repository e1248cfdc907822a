#!/usr/bin/env bash
# The paper's medium and large PTB runs on one GPU, side by side, each in its own process.
#
#   bench/ptb_gpu.sh DATA_DIR LOG_DIR [SECONDS] [PRESET...]
#
# Checkpoints go to runs/gpu-<preset>/ (last.pt and best.pt). A run whose last.pt is
# there is resumed from it (the numbers are those of an uninterrupted run), so the script can be
# called again after a time limit stopped it. Each run stops after SECONDS (default 560); its log
# is LOG_DIR/<preset>.log. Extra `python -m model train` flags for every run: $TRAIN_FLAGS.
set -uo pipefail
data=${1:?data folder}
logs=${2:?log folder}
seconds=${3:-560}
shift $(($# < 3 ? $# : 3))
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(medium large)
mkdir -p "$logs"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available() and torch.cuda.get_device_name())'
    python3 -c 'import platform, os; print(platform.processor() or platform.machine(), os.cpu_count(), "cpus")'
} >"$logs/machine.txt" 2>&1
pids=()
for p in "${presets[@]}"; do
    out=runs/gpu-$p
    mkdir -p "$out"
    if [ -f "$out/last.pt" ]; then
        args=(--resume "$out/last.pt")
    else
        args=(--preset "$p")
    fi
    # shellcheck disable=SC2086
    timeout --signal=TERM "$seconds" python3 -m model train "${args[@]}" --data "$data" --out "$out" \
        --device "${DEVICE:-cuda}" --no-epoch-checkpoints ${TRAIN_FLAGS:-} >>"$logs/$p.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
    wait "$pid" || status=$?
done
exit "$status"
