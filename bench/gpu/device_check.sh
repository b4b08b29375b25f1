#!/usr/bin/env bash
# The GPU check, run on a lent GPU machine (see README "GPU"). Stages:
#   bash bench/gpu/device_check.sh recv N   copy .gpu/pN/part* (a slice of the bundle) to /tmp/gp
#   bash bench/gpu/device_check.sh run      join the bundle, install onnxruntime-gpu, run the GPU
#                                           tests and the CPU vs GPU benchmarks into $OUT
# The bundle (made by bench/gpu/make_bundle.sh) holds the onnxruntime-gpu wheel and the exported
# all-MiniLM-L6-v2 (the machine has no optimum and no network); it is sent in slices because one
# call carries at most 64 MiB.
set -uo pipefail
stage=${1:?recv N | run}
case "$stage" in
recv)
  mkdir -p /tmp/gp && cp .gpu/p"$2"/part* /tmp/gp/ && ls -la /tmp/gp && nvidia-smi -L && python3 --version ;;
run)
  OUT=${OUT:-/tmp/out}
  R=/tmp/res   # everything lands here, then one tar comes back (a call returns at most 8 files)
  mkdir -p /tmp/bundle "$OUT" "$R"
  cat /tmp/gp/part* > /tmp/bundle.tar || exit 1
  echo "bundle sha256 $(sha256sum /tmp/bundle.tar | cut -c1-64) expected $(cat .gpu/bundle.sha256 2>/dev/null)"
  tar -xf /tmp/bundle.tar -C /tmp/bundle || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/bundle/onnxruntime_gpu-*.whl || exit 1
  # the repo layout maps kernels/ and models/ into the engine package (pyproject); mirror that
  ln -sfn "$PWD/kernels" engine/kernels; ln -sfn "$PWD/models" engine/models
  export PYTHONPATH=/tmp/site:$PWD EMBED_ENGINE_CACHE=/tmp/bundle/cache PYTHONUNBUFFERED=1
  python3 - <<'PY'
import json, pathlib, shutil
from engine.models.quantize import convert_fp16
src = pathlib.Path("/tmp/bundle/cache/onnx/all-MiniLM-L6-v2-fp32-v1/model.onnx")
dst = pathlib.Path("/tmp/bundle/cache/onnx/all-MiniLM-L6-v2-fp16-v1/model.onnx")
if not dst.exists():
    convert_fp16(src, dst)
import onnxruntime as ort
print("onnxruntime", ort.__version__, ort.get_available_providers())
PY
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$R/gpu.txt"
  [ -n "${ONLY_BENCH:-}" ] || python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py tests/kernels/test_cuda.py -rs 2>&1 | tee "$R/gpu_tests.txt"
  [ -n "${ONLY_BENCH:-}" ] || python3 bench/gpu/search_cpu_vs_gpu.py --n 1000000 --out "$R/search_gpu.json" 2>&1 | tail -8
  python3 -m engine bench --model all-MiniLM-L6-v2 --precision fp32,fp16 --device cpu,cuda \
      --batch-sizes 1,8,32,128,256 --lengths short,long --n-texts 512 --repeats 3 --baselines none \
      --no-progress --out "$R/bench" 2>&1 | tail -40
  tar -cf "$OUT/gpu_results.tar" -C "$R" . ; cp "$R"/*.txt "$R"/*.json "$OUT"/ 2>/dev/null; ls -la "$OUT" ;;
esac
