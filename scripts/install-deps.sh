#!/usr/bin/env bash
# Installs gantry's build and test dependencies from Debian's packages.
# Idempotent: packages already present are not reinstalled, and it prints nothing then.
# Usage: scripts/install-deps.sh [--optional]
#   --optional  also installs what the PyTorch comparison benchmark and the report
#               screenshot use (python3-torch, OpenBLAS' OpenMP build, chromium).
set -euo pipefail

required=(
  build-essential cmake make pkg-config
  libeigen3-dev        # CPU GEMM (conv, linear)
  libstb-dev           # image decode/encode/resize
  catch2               # Catch2 v2 tests
  libcli11-dev         # command-line flags
  nlohmann-json3-dev   # config.json, safetensors headers
  zlib1g-dev           # gzipped IDX files
  libzip-dev           # torch.save checkpoints (.pth): ZIP archives
  libwebp-dev          # .webp images (stb reads the other formats)
  liblmdb-dev          # LSUN's databases (--dataset lsun)
  dataset-fashion-mnist  # the built-in default dataset
)
optional=(python3-torch libopenblas0-openmp chromium)

want=("${required[@]}")
if [[ "${1:-}" == "--optional" ]]; then want+=("${optional[@]}"); fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
