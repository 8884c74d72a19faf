#!/usr/bin/env bash
# Downloads, where pip reaches PyPI, the wheels benchmarks/gpu_run.sh installs on a GPU
# machine that cannot reach a package index: into .whl/ (git ignores it), for CPython 3.12
# on x86-64 Linux. torch, torchvision, numpy and Pillow are expected there already.
#
#   benchmarks/fetch_gpu_wheels.sh            # then carry .whl/ with the repository
#
# Only what the benchmarks import travels (about 60 MB less than their full dependency
# lists): the three reference libraries and ttach; tqdm and packaging (pure Python);
# opencv-python-headless, which gradcam_kit itself needs (colour maps). matplotlib, scipy
# and scikit-learn, which pytorch-grad-cam and Captum import but whose code their Grad-CAM
# paths never run, are left out; gpu_run.sh stands in empty modules for them when absent.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=${WHEELS:-.whl}
python=${PYTHON:-python3}
mkdir -p "$wheels"

download() {
  "$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$wheels" "$@"
}

download captum==0.9.0 torchcam==0.5.0 ttach==0.0.3 tqdm==4.70.1 packaging==26.4 \
  opencv-python-headless==4.10.0.84
# grad-cam may be published as a source archive only; it is pure Python, so a wheel built
# here installs on any CPython 3 there.
download grad-cam==1.5.7 || "$python" -m pip wheel --no-deps -w "$wheels" grad-cam==1.5.7

ls -l "$wheels"
du -ch "$wheels"/*.whl | tail -1
