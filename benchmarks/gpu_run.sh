#!/usr/bin/env bash
# The GPU figures of docs/PERFORMANCE.md in one command, on a bare machine that has
# Python 3.12, torch and torchvision with CUDA, and no package index:
#
#   OUT=/some/folder benchmarks/gpu_run.sh          # about 4-5 minutes on an H100
#
# 1. installs, from the wheels in .whl/ (benchmarks/fetch_gpu_wheels.sh), only the
#    packages that cannot be imported (into /tmp/site, no index, no dependencies);
# 2. runs the issue-6 harness, benchmarks/bench_gradcam.py, at B = 1, 8, 64, 256
#    (fp32, channels_last, bf16 autocast; plain inference, ours, pytorch-grad-cam, Captum,
#    torchcam; time and peak memory), with empty stand-ins for matplotlib, scipy and
#    scikit-learn if they are missing (benchmarks/stub_missing.py);
# 3. runs the end-to-end benchmark, benchmarks/bench_e2e.py (explain and evaluate against
#    plain inference on synthetic X-rays written by `gradcam-kit synth`) and times --help;
# 4. times full Score-CAM against its top-k variant (benchmarks/bench_scorecam.py).
#
# Results go to $OUT (default outputs/gpu): gpu_run.log, bench_cuda.json/.png,
# e2e_cuda.json/.md, scorecam_cuda.json/.md; at most 8 files.
#
# GPU_RUN_TINY=1 shrinks every size so that the whole script runs in a few minutes on a
# CPU (GPU_RUN_DEVICE=cpu): the check that it works before the GPU time is spent.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-outputs/gpu}
mkdir -p "$out"
exec > >(tee -a "$out/gpu_run.log") 2>&1
python=${PYTHON:-python3}
device=${GPU_RUN_DEVICE:-cuda}
tiny=${GPU_RUN_TINY:-0}
status=0
step() { echo; echo "== $(date -u +%H:%M:%S) $*"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
nproc; uptime
"$python" -c 'import sys, torch, torchvision; print(sys.version.split()[0], "torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.cuda.is_available())'

step "wheels for what is missing"
wanted=(cv2:opencv_python_headless tqdm:tqdm packaging:packaging ttach:ttach
        pytorch_grad_cam:grad_cam captum:captum torchcam:torchcam)
install=()
for pair in "${wanted[@]}"; do
  module=${pair%%:*}
  if "$python" -c "import $module" 2>/dev/null; then
    echo "  $module: installed"
  else
    wheel=$(ls .whl/"${pair#*:}"-*.whl 2>/dev/null | head -1)
    if [[ -n $wheel ]]; then install+=("$wheel"); echo "  $module: from $wheel"
    else echo "  $module: missing and no wheel in .whl/ (run benchmarks/fetch_gpu_wheels.sh)"; fi
  fi
done
if ((${#install[@]})); then
  "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${install[@]}" \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if [[ $tiny == 1 ]]; then
  harness=(--batch-sizes 2 --size 64 --repeats 1 --warmup 0 --no-memory)
  e2e=(--images 8 --file-size 96 --size 64 --batch-size 4 --rounds 1 --warmup 0 --startup 1)
  scorecam=(--images 1 --size 64 --layer layer1.2.conv3 --top-k 8 32 --time-top-k 8 --chunk 64)
  limits=(600 600 600)  # a CPU is slow; the point is that every step runs
else
  harness=(--batch-sizes 1 8 64 256 --repeats 15 --warmup 3)
  e2e=(--images 384 --rounds 3 --warmup 1 --startup 2)
  scorecam=(--images 16 --size 224 --top-k 16 32 64 128 256 --chunk 256)
  limits=(170 200 70)  # seconds per step; expected about 80, 130 and 30 on an H100
fi

step "harness: bench_gradcam.py ${harness[*]}"
timeout "${limits[0]}" "$python" benchmarks/stub_missing.py matplotlib,mpl_toolkits,scipy,sklearn \
  benchmarks/bench_gradcam.py --device "$device" --out-dir "$out" "${harness[@]}" || status=1

step "end to end: bench_e2e.py ${e2e[*]}"
timeout "${limits[1]}" "$python" benchmarks/bench_e2e.py --device "$device" --out-dir "$out" "${e2e[@]}" || status=1

step "Score-CAM: bench_scorecam.py ${scorecam[*]}"
timeout "${limits[2]}" "$python" benchmarks/bench_scorecam.py --device "$device" --out-dir "$out" "${scorecam[@]}" || status=1

step "done (status $status)"; ls -l "$out"
exit $status
