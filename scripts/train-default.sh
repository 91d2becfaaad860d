#!/usr/bin/env bash
# The main job of `make train`: dcgan_train on Fashion-MNIST (Debian's package, no download).
# With a GPU: 64x64 for 5 epochs. Without: the same networks at 32x32 (one stage fewer), batch
# 64, two epochs (measured: 5.6 min for both on the 2-core development machine, ~360 images/s),
# capped at 6 minutes of training so that, with the build, a slower or busier machine still
# finishes in about 10 minutes (it stops cleanly with a checkpoint; --resume continues).
# Usage: scripts/train-default.sh BUILD_DIR [extra dcgan_train flags]
set -euo pipefail
build=${1:-build}; shift || true
bin="$build/apps/dcgan_train"
out="runs/fashion-mnist-$(date +%Y%m%d-%H%M%S)"
if "$build/apps/dcgan_train" --help >/dev/null && [ -n "$(command -v nvidia-smi)" ] && nvidia-smi -L >/dev/null 2>&1; then
  args=(--device auto --image-size 64 --epochs 5 --workers 8)
else
  args=(--device cpu --image-size 32 --batch-size 64 --epochs 2 --time-limit 360
        --sample-every 200 --checkpoint-every 500 --workers 1)
fi
"$bin" --out "$out" "${args[@]}" "$@"
echo
echo "Samples: $out/samples/   Report: $out/report.html"
echo "Generate more: $build/apps/dcgan_generate --checkpoint $out --num 64 --grid $out/generated.png"
