#!/usr/bin/env bash
# Builds the safetensors-reader fuzzer with clang (libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer over the whole library) and runs it for a while.
#
# Usage: scripts/fuzz-safetensors.sh [SECONDS=60] [BUILD_DIR=build-fuzz]
#   JOBS=N       parallel compile jobs (default 2)
#   FUZZ_ARGS=.. extra libFuzzer flags (e.g. "-jobs=2 -workers=2")
# The seed corpus is tests/fuzz/corpus (read only); new inputs go to BUILD_DIR/fuzz-corpus.
# A crash leaves crash-* / leak-* files in BUILD_DIR and a non-zero exit status.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
build=${2:-$root/build-fuzz}
command -v clang++ >/dev/null || { echo "fuzz-safetensors: clang++ not found (apt-get install clang)" >&2; exit 1; }

sanitize="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DGANTRY_CUDA=OFF -DGANTRY_BUILD_APPS=OFF -DGANTRY_BUILD_BENCHMARKS=OFF -DBUILD_SHARED_LIBS=OFF \
  -DCMAKE_CXX_FLAGS="$sanitize" >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target fuzz_safetensors

mkdir -p "$build/fuzz-corpus"
cd "$build"
# shellcheck disable=SC2086
exec "$build/tests/fuzz_safetensors" "$build/fuzz-corpus" "$root/tests/fuzz/corpus" \
  -dict="$root/tests/fuzz/safetensors.dict" -max_total_time="$seconds" -max_len=4096 \
  -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ${FUZZ_ARGS:-}
