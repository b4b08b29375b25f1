#!/usr/bin/env bash
# Build the GPU-check bundle here (CPU machine), in .gpu/ (git-ignored via .git/info/exclude):
# the onnxruntime-gpu wheel for the device's Python 3.12 and the exported all-MiniLM-L6-v2 (fp32;
# the fp16 graph is derived there with models/quantize.convert_fp16), split in six slices.
set -euo pipefail
cd "$(dirname "$0")/../.."
ORT=${ORT:-1.31.1}
work=$(mktemp -d)
.venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$work" "onnxruntime-gpu==$ORT"
fp32=$(.venv/bin/embed export all-MiniLM-L6-v2 | tail -1 | xargs dirname)
fp16=$(.venv/bin/embed export all-MiniLM-L6-v2 --precision fp16 | tail -1 | xargs dirname)
mkdir -p "$work/cache/onnx/$(basename "$fp32")" "$work/cache/onnx/$(basename "$fp16")"
cp "$fp32"/{model.onnx,meta.json,tokenizer.json} "$work/cache/onnx/$(basename "$fp32")/"
cp "$fp16"/{meta.json,tokenizer.json} "$work/cache/onnx/$(basename "$fp16")/"
tar -cf "$work/bundle.tar" -C "$work" cache $(cd "$work" && ls onnxruntime_gpu-*.whl)
rm -rf .gpu && mkdir -p .gpu
split -n 6 -d -a 1 "$work/bundle.tar" "$work/part"
for i in 0 1 2 3 4 5; do mkdir -p ".gpu/p$((i + 1))"; mv "$work/part$i" ".gpu/p$((i + 1))/"; done
sha256sum "$work/bundle.tar" | cut -c1-64 > .gpu/bundle.sha256
rm -rf "$work"
ls -la .gpu/*
