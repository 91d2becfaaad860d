#!/usr/bin/env bash
# Builds one of the checkpoint-reader fuzzers with clang (libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer over the whole library) and runs it for a while.
#
# Usage: scripts/fuzz.sh [safetensors|torch|pickle] [SECONDS=60] [BUILD_DIR=build-fuzz]
#   safetensors  parse_safetensors          (seeds tests/fuzz/corpus, dict safetensors.dict)
#   torch        parse_torch_checkpoint     (seeds tests/fuzz/torch_corpus, dict torch.dict)
#   pickle       pickle::Unpickler          (seeds tests/data/pickle and the CIFAR python
#                                            batches, dict pickle.dict)
#   JOBS=N       parallel compile jobs (default 2)
#   FUZZ_ARGS=.. extra libFuzzer flags (e.g. "-jobs=2 -workers=2")
# The seed corpus is read only; new inputs go to BUILD_DIR/fuzz-corpus-<target>.
# A crash leaves crash-* / leak-* files in BUILD_DIR and a non-zero exit status.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
which=${1:-safetensors}
seconds=${2:-60}
build=${3:-$root/build-fuzz}
case $which in
  safetensors) target=fuzz_safetensors; seeds=$root/tests/fuzz/corpus; dict=$root/tests/fuzz/safetensors.dict; max_len=4096 ;;
  torch) target=fuzz_torch_checkpoint; seeds=$root/tests/fuzz/torch_corpus; dict=$root/tests/fuzz/torch.dict; max_len=8192 ;;
  pickle) target=fuzz_pickle; seeds="$root/tests/data/pickle $root/tests/data/cifar-10-batches-py $root/tests/data/cifar-100-python"
    dict=$root/tests/fuzz/pickle.dict; max_len=16384 ;;
  *) echo "fuzz: unknown target '$which' (safetensors, torch or pickle)" >&2; exit 2 ;;
esac
command -v clang++ >/dev/null || { echo "fuzz: clang++ not found (apt-get install clang)" >&2; exit 1; }

sanitize="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DGANTRY_CUDA=OFF -DGANTRY_BUILD_APPS=OFF -DGANTRY_BUILD_BENCHMARKS=OFF -DBUILD_SHARED_LIBS=OFF \
  -DCMAKE_CXX_FLAGS="$sanitize" >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target "$target"

mkdir -p "$build/fuzz-corpus-$which"
cd "$build"
# shellcheck disable=SC2086
exec "$build/tests/$target" "$build/fuzz-corpus-$which" $seeds \
  -dict="$dict" -max_total_time="$seconds" -max_len=$max_len \
  -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ${FUZZ_ARGS:-}
