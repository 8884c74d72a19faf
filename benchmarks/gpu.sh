#!/usr/bin/env bash
# Grad-CAM benchmarks on a GPU machine that cannot reach a package index.
#
#   benchmarks/gpu.sh fetch          where pip reaches PyPI: the reference libraries as
#                                    wheels into .whl/ (git ignores it), for Python 3.12
#   benchmarks/gpu.sh run [FLAGS]    on the GPU machine, from a copy of the repository that
#                                    holds .whl/: installs the wheels into /tmp/site (no
#                                    index, no dependencies) and runs
#                                    benchmarks/bench_gradcam.py --device cuda FLAGS
#
# `fetch` runs benchmarks/fetch_gpu_wheels.sh. For every GPU figure in one command (harness,
# end-to-end, Score-CAM; installs only what is missing) use benchmarks/gpu_run.sh instead.
# Results (JSON, PNG, log) go to $OUT when it is set, else to outputs/benchmarks.
# See docs/PERFORMANCE.md.
set -euo pipefail
cd "$(dirname "$0")/.."

wheels=${WHEELS:-.whl}
site=${SITE:-/tmp/site}
python=${PYTHON:-python3}
command=${1:-run}
shift || true

case "$command" in
  fetch)
    exec benchmarks/fetch_gpu_wheels.sh
    ;;
  run)
    if compgen -G "$wheels/*.whl" >/dev/null; then
      "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$site" "$wheels"/*.whl
      export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
      echo "no wheels in $wheels: the reference libraries will show as 'not installed'" >&2
    fi
    out=${OUT:-outputs/benchmarks}
    mkdir -p "$out"
    set -o pipefail
    PYTHONUNBUFFERED=1 "$python" benchmarks/bench_gradcam.py --device cuda --out-dir "$out" "$@" \
      2>&1 | tee -a "$out/bench_cuda.log"
    ;;
  *)
    echo "usage: benchmarks/gpu.sh fetch | run [bench_gradcam.py flags]" >&2
    exit 2
    ;;
esac
