#!/usr/bin/env bash
# Copies the header-only dependencies (and Catch2's prebuilt main) from this machine's Debian
# packages into a prefix folder, for a GPU machine that has CUDA but no package access:
#   scripts/stage-deps.sh [stage]          # default folder: stage/ (git ignores it)
#   cmake -S . -B build-gpu -DGANTRY_DEPS_PREFIX=$PWD/stage ...   (on the GPU machine)
# The layout under the folder mirrors /usr (include/, share/eigen3/cmake, share/cmake/
# nlohmann_json, lib/cmake/Catch2), so each package's CMake config finds its files relative
# to itself. zlib's headers and link library are staged too (the GPU image may have no
# zlib1g-dev; its libz.so.1, which cuDNN itself needs, serves at run time). OpenMP comes with
# the compiler.
set -euo pipefail
dest=${1:-stage}
scripts/install-deps.sh
mkdir -p "$dest/include" "$dest/share/eigen3" "$dest/share/cmake" "$dest/lib/cmake"
cp -r /usr/include/eigen3 /usr/include/stb /usr/include/CLI /usr/include/nlohmann /usr/include/catch2 "$dest/include/"
cp -r /usr/share/eigen3/cmake "$dest/share/eigen3/"
cp -r /usr/share/cmake/nlohmann_json "$dest/share/cmake/"
cp -r /usr/lib/cmake/Catch2 "$dest/lib/cmake/"
cp /usr/lib/libCatch2WithMain.a "$dest/lib/"
cp /usr/include/zlib.h /usr/include/zconf.h "$dest/include/"
cp "$(readlink -f /usr/lib/x86_64-linux-gnu/libz.so)" "$dest/lib/libz.so"  # soname libz.so.1
du -sh "$dest" | awk '{print "staged " $1 " in " $2}'
