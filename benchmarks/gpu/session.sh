#!/usr/bin/env bash
# Every GPU measurement in one call of the device machine (see ../shared/DEVICE.md).
#
# Prepared here with `.venv/bin/python -m benchmarks.gpu.prepare` (benchmarks/.gpu: SmolLM2's
# config and tokenizer, the real model's CCC prompts, wheels), then run there from the repository
# root with `benchmarks/.gpu` carried:  bash benchmarks/gpu/session.sh "$OUT"
# Each part has its own time limit and writes its own JSON into the output folder, so a part
# that fails or runs long costs only itself; the log is kept beside them. About 6 minutes on an
# H200 (2026-11-27, in three calls: the parts as here, the capture and profile parts rerun after
# fixes; results in benchmarks/studies/results/gpu_*.json and paper_sizes.json).
set -u
out="${1:?output folder}"
log="$out/session.log"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    benchmarks/.gpu/whl/*.whl >"$log" 2>&1 || { echo "wheel install failed" | tee -a "$log"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$log" 2>&1
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" >>"$log" 2>&1

part() {  # part NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    echo "=== $name (limit ${limit}s)" | tee -a "$log"
    timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    echo "=== $name: exit $? after $((SECONDS - t0))s" | tee -a "$log"
}

part gpu_step 110 python3 -m benchmarks.gpu.step --device cuda --batches 32,128 --rounds 3 --steps 10 --out "$out"
part gpu_capture 90 python3 -m benchmarks.gpu.capture --device cuda --batches 32,128 --rounds 3 --steps 10 --out "$out"
part paper_sizes 200 python3 -m benchmarks.studies.paper_sizes --device cuda --steps 5 --timeout 90 --out "$out"
part gpu_checks 90 python3 -m benchmarks.gpu.checks --device cuda --out "$out"
part gpu_demo 80 python3 -m benchmarks.gpu.demo --device cuda --out "$out"
part gpu_profile 90 python3 -m benchmarks.gpu.profile --device cuda --batch 32 --steps 3 --out "$out"
tail -c 6000 "$log"
