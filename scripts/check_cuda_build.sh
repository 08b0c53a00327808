#!/usr/bin/env bash
# Does forge's `cuda` feature build? On a machine without the CUDA toolkit: nvcc, the CUDA headers and
# libraries come from NVIDIA's PyPI wheels, unpacked into a scratch directory, then
# `cargo check --release --features cuda` runs (candle's CUDA kernels are compiled by nvcc in its build
# script; nothing runs on a GPU, so none is needed). Run by hand; takes about 8 minutes on 2 cores. A full
# `cargo build --features cuda` compiles too but its last step, linking, needs `libcuda.so`: the NVIDIA
# driver's, or the full toolkit's `lib64/stubs`; the wheels do not carry it.
#
#   scripts/check_cuda_build.sh [WORK]        # CUDA_COMPUTE_CAP defaults to 90 (H100, H200)
set -euo pipefail
work=${1:-/var/tmp/forge-cuda}
mkdir -p "$work/wheels"
pip download --quiet --no-deps -d "$work/wheels" nvidia-cuda-nvcc==13.5.37 nvidia-cuda-runtime==13.5.37 \
    nvidia-cuda-crt==13.5.37 nvidia-nvvm==13.5.37 nvidia-cuda-cccl==13.3.5.0.6
for wheel in "$work"/wheels/*.whl; do unzip -q -o "$wheel" -d "$work/toolkit"; done
cuda="$work/toolkit/nvidia/cu13"
export PATH="$cuda/bin:$PATH" CUDA_PATH="$cuda" CUDA_HOME="$cuda" CUDA_ROOT="$cuda"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# cudarc 0.19 lists CUDA releases up to 13.4 and refuses nvcc 13.5 by name: build its 13.4 bindings
export CUDARC_CUDA_VERSION=13040
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$work/target}
nvcc --version | tail -2
cargo check --release --features cuda --bin forge
