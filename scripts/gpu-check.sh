#!/usr/bin/env bash
# shellcheck disable=SC2317  # the phases are called indirectly ("do_$phase")
# One-command verification of the CUDA backend on a GPU machine (written for the project's
# lent H100: CUDA 13, no network, no package access, 10 minutes per command).
#
#   scripts/gpu-check.sh [probe|build|test|bench|sanitize|cpu-suite|all ...]   (default: all)
#
#   probe     GPU, driver, nvcc, cmake, where cuDNN is (/usr/local/cuda, CUDNN_ROOT, or the pip
#             package nvidia-cudnn-cu13/-cu12), compute-sanitizer, PyTorch
#   build     configure + build build-gpu/: -DGANTRY_CUDA=ON, CUDA architectures native (90
#             without a GPU to ask), GANTRY_DEPS_PREFIX=stage (scripts/stage-deps.sh), CUDNN_ROOT;
#             only what the GPU phases run (cuda_tests, dcgan_step, kernel_bench)
#   test      ctest -L cuda (the GPU parity tests)
#   bench     dcgan_step --device cuda --config all, kernel_bench --impl cuda, and with PyTorch
#             benchmarks/compare_pytorch.sh --device cuda --config 64rgb_b128 --cudnn-benchmark
#             (+ --compile, with cuDNN's benchmark mode too)
#   sanitize  compute-sanitizer memcheck, then racecheck, on each tests/cuda_* executable
#   cpu-suite the rest of the build, then the rest of the suite (ctest -LE cuda): CI runs it on
#             every commit, so on the GPU machine it comes last
#   all       probe build test bench sanitize cpu-suite (the GPU's checks first; the sanitizer
#             and the CPU suite fill what is left)
#
# Every phase continues after a failure and records it. Logs go to ${OUT:-gpu-out}/<phase>.log,
# the verdicts to summary.txt (at most 8 files, as the device tool returns). test, sanitize and
# bench build first when needed (incremental: a no-op after build). The whole run keeps to a
# time budget (GPU_CHECK_BUDGET seconds, default 560, under the tool's 600-second limit): a phase
# or step that no longer fits is skipped and says so; run the rest in a second call.
#
# Environment: OUT, BUILD_DIR (build-gpu), JOBS (nproc, at most 16), CUDA_ARCH (native / 90),
# CUDNN_ROOT, GPU_CHECK_BUDGET (560), SAN_TIMEOUT (seconds per sanitizer run, 150),
# BENCH_TIMEOUT (seconds per benchmark command, 240).
set -u
set -o pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2
out=${OUT:-gpu-out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=${BUILD_DIR:-build-gpu}
jobs=${JOBS:-$(nproc)}
((jobs > 16)) && jobs=16
budget=${GPU_CHECK_BUDGET:-560}
san_timeout=${SAN_TIMEOUT:-150}
bench_timeout=${BENCH_TIMEOUT:-240}
summary="$out/summary.txt"

phases=("$@")
[[ ${#phases[@]} -eq 0 ]] && phases=(all)
for p in "${phases[@]}"; do
  case "$p" in
    probe|build|test|sanitize|bench|cpu-suite|all) ;;
    -h|--help) sed -n 3,30p "$0"; exit 0 ;;
    *) echo "gpu-check: unknown phase '$p' (probe|build|test|sanitize|bench|cpu-suite|all)" >&2; exit 2 ;;
  esac
done
if [[ " ${phases[*]} " == *" all "* ]]; then phases=(probe build test bench sanitize cpu-suite); fi

# ---- bookkeeping ---------------------------------------------------------------------------
results=()        # "phase|status|seconds|note"
phase_status=ok   # worst step result of the running phase
phase_notes=""
log=/dev/null

remaining() { echo $((budget - SECONDS)); }

note() { phase_notes="${phase_notes:+$phase_notes; }$*"; }

# step NAME TIMEOUT CMD...: runs CMD with its output appended to the phase log, under
# `timeout` (capped by the time left), and records the result in the phase's status.
step() {
  local name=$1 limit=$2 left rc t0
  shift 2
  left=$(( $(remaining) - 5 ))
  ((limit > left)) && limit=$left
  if ((limit < 10)); then
    echo "== $name: skipped (out of time budget)" >>"$log"
    note "$name skipped (time)"
    [[ $phase_status == ok ]] && phase_status=partial
    return 124
  fi
  t0=$SECONDS
  {
    echo
    echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s)"
    echo "\$ $*"
  } >>"$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  echo "== $name: rc=$rc in $((SECONDS - t0))s" >>"$log"
  if ((rc == 0)); then
    printf '   %-44s ok (%ss)\n' "$name" $((SECONDS - t0))
  else
    local what="rc $rc"
    ((rc == 124 || rc == 137)) && what="timeout after ${limit}s"
    printf '   %-44s FAILED: %s (%ss)\n' "$name" "$what" $((SECONDS - t0))
    note "$name: $what"
    phase_status=FAILED
  fi
  return "$rc"
}

begin_phase() {
  log="$out/$1.log"
  : >"$log"
  phase_status=ok
  phase_notes=""
  phase_t0=$SECONDS
  echo "[$1] (log: $log; $(remaining)s of the budget left)"
}

end_phase() {
  results+=("$1|$phase_status|$((SECONDS - phase_t0))|$phase_notes")
  # The device tool returns files of at most 16 MiB: keep the head and the tail of a huge log.
  if [[ -f $log ]] && (($(stat -c %s "$log") > 15000000)); then
    { head -c 5000000 "$log"; printf '\n\n[... cut by gpu-check ...]\n\n'; tail -c 9000000 "$log"; } >"$log.tmp"
    mv "$log.tmp" "$log"
  fi
}

skip_phase() {
  results+=("$1|skipped|0|$2")
  echo "[$1] skipped: $2"
}

has_gpu() { nvidia-smi -L >/dev/null 2>&1; }

# cuDNN: CUDNN_ROOT if set, else the CUDA toolkit's, else the pip package's folder.
find_cudnn() {
  if [[ -n ${CUDNN_ROOT:-} ]]; then echo "$CUDNN_ROOT"; return; fi
  local cuda_home=${CUDA_HOME:-/usr/local/cuda}
  if [[ -f $cuda_home/include/cudnn.h ]] && compgen -G "$cuda_home/lib*/libcudnn.so*" >/dev/null; then
    echo "$cuda_home"; return
  fi
  local d
  d=$(python3 -c 'import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__))' 2>/dev/null) || d=""
  # A namespace package (no __init__.py) has no __file__: take its __path__ instead.
  [[ -z $d ]] && d=$(python3 -c 'import nvidia.cudnn; print(list(nvidia.cudnn.__path__)[0])' 2>/dev/null)
  [[ -n $d && -d $d ]] && echo "$d"
}

cudnn_root=$(find_cudnn)
# The pip package's libraries are not on the loader's path: the tests and benchmarks need them.
if [[ -n $cudnn_root && -d $cudnn_root/lib ]]; then
  export LD_LIBRARY_PATH="$cudnn_root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export CUDNN_ROOT=${cudnn_root:-}
[[ -d /usr/local/cuda/bin ]] && export PATH="$PATH:/usr/local/cuda/bin"

ensure_built() {  # for test/sanitize/bench: the build, if it is not there or not current
  if [[ ! -f $build/CMakeCache.txt ]]; then
    echo "   (no $build yet: building first)"
    do_build
  fi
}

# ---- phases --------------------------------------------------------------------------------
do_probe() {
  begin_phase probe
  {
    echo "date: $(date -u)"
    echo "host: $(uname -a)"
    echo "cpus: $(nproc), memory: $(awk '/MemTotal/ {print $2/1048576 " GiB"}' /proc/meminfo)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null) ($(git status --porcelain 2>/dev/null | wc -l) changed files)"
  } >>"$log" 2>&1
  if has_gpu; then
    step "nvidia-smi" 30 nvidia-smi
    step "gpu query" 30 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm --format=csv
  else
    echo "no GPU: nvidia-smi $(command -v nvidia-smi >/dev/null && echo 'found no device' || echo 'is not installed')" >>"$log"
    note "no GPU"
  fi
  if command -v nvcc >/dev/null; then step "nvcc" 30 nvcc --version; else note "no nvcc"; phase_status=FAILED; fi
  step "cmake" 30 cmake --version
  {
    echo
    echo "cuDNN: ${cudnn_root:-NOT FOUND} (used as CUDNN_ROOT)"
    [[ -n $cudnn_root ]] && grep -h -E 'define CUDNN_(MAJOR|MINOR|PATCHLEVEL) ' "$cudnn_root"/include/cudnn_version*.h 2>/dev/null | sort -u
    [[ -n $cudnn_root ]] && compgen -G "$cudnn_root/lib*/libcudnn.so*" | head -3
    echo "cuDNN in /usr/local/cuda: $(ls /usr/local/cuda/include/cudnn.h 2>/dev/null || echo no)"
    echo "pip cuDNN: $(python3 -c 'import nvidia.cudnn; print(list(nvidia.cudnn.__path__)[0])' 2>/dev/null || echo none)"
    echo "compute-sanitizer: $(command -v compute-sanitizer || echo none)"
    echo "staged deps (stage/): $( [[ -d stage/include ]] && echo yes || echo 'NO: run scripts/stage-deps.sh here and carry stage')"
    echo "zlib.h: $(ls /usr/include/zlib.h 2>/dev/null || echo 'NOT FOUND: the configure will fail')"
    echo "fashion-mnist (CPU tests): $(ls -d /usr/share/datasets/fashion-mnist 2>/dev/null || echo 'absent: tests that read it fail')"
    echo "python3: $(command -v python3 || echo none)"
  } >>"$log" 2>&1
  [[ -z $cudnn_root ]] && { note "cuDNN not found"; phase_status=FAILED; }
  local torch
  torch=$(python3 -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available())' 2>/dev/null) \
    || torch="not importable"
  echo "torch: $torch" >>"$log"
  note "torch $torch"
  grep -E '^(cuDNN|torch|no GPU)' "$log" | sed 's/^/   /'
  end_phase probe
}

do_build() {
  begin_phase build
  local arch=${CUDA_ARCH:-}
  if [[ -z $arch ]]; then
    if has_gpu; then arch=native; else arch=90; fi
  fi
  local args=(-S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DGANTRY_CUDA=ON
              "-DCMAKE_CUDA_ARCHITECTURES=$arch")
  [[ -d stage/include ]] && args+=("-DGANTRY_DEPS_PREFIX=$root/stage")
  [[ -n $cudnn_root ]] && args+=("-DCUDNN_ROOT=$cudnn_root")
  [[ ! -f $build/CMakeCache.txt ]] && command -v ninja >/dev/null && args+=(-G Ninja)
  note "arch $arch, jobs $jobs"
  if step "configure" 300 cmake "${args[@]}"; then
    # Keep going past a failing target, so one broken test does not hide the others.
    local keep=(-k)
    grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja' "$build/CMakeCache.txt" && keep=(-k 0)
    step "build -j$jobs (GPU targets)" 900 cmake --build "$build" -j "$jobs" \
      --target cuda_tests dcgan_step kernel_bench -- "${keep[@]}"
  fi
  grep -E 'gantry: CUDA backend|error' "$log" | head -20 | sed 's/^/   /'
  end_phase build
}

do_test() {
  ensure_built
  begin_phase test
  if ! has_gpu; then note "no GPU: the cuda tests skip (77)"; fi
  # --no-tests=error: a build that registered no test (a failed configure) is a failure.
  step "ctest -L cuda" 400 ctest --test-dir "$build" -L cuda --no-tests=error --output-on-failure --timeout 300
  if has_gpu && grep -qE '\*\*\*Skipped|Not Run' "$log"; then
    note "a cuda test SKIPPED on a GPU machine"
    phase_status=FAILED
  fi
  grep -E 'tests passed|tests failed|\(Failed\)|\(Timeout\)|\*\*\*Skipped|Not Run' "$log" | head -20 | sed 's/^/   /'
  end_phase test
}

do_cpu-suite() {
  ensure_built
  begin_phase cpu-suite
  local keep=(-k)
  grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja' "$build/CMakeCache.txt" && keep=(-k 0)
  step "build -j$jobs (the rest)" 600 cmake --build "$build" -j "$jobs" -- "${keep[@]}"
  step "ctest -LE cuda" 400 ctest --test-dir "$build" -LE cuda -j "$jobs" --no-tests=error --output-on-failure --timeout 300
  grep -E 'tests passed|tests failed|\(Failed\)|\(Timeout\)' "$log" | head -20 | sed 's/^/   /'
  end_phase cpu-suite
}

do_sanitize() {
  ensure_built
  begin_phase sanitize
  if ! command -v compute-sanitizer >/dev/null; then
    note "compute-sanitizer not found"; phase_status=FAILED; end_phase sanitize; return
  fi
  if ! has_gpu; then note "no GPU"; phase_status=skipped; end_phase sanitize; return; fi
  local exes=() e tool
  for e in "$build"/tests/cuda_test_*; do [[ -x $e && -f $e ]] && exes+=("$e"); done
  [[ ${#exes[@]} -eq 0 ]] && { note "no tests/cuda_test_* executables"; phase_status=FAILED; }
  # memcheck everything first (out-of-bounds, misaligned, leaks of device faults), then
  # racecheck (shared-memory hazards; slow: a timeout there is recorded, not hidden).
  for tool in memcheck racecheck; do
    for e in "${exes[@]}"; do
      step "$tool $(basename "$e")" "$san_timeout" compute-sanitizer --tool "$tool" --error-exitcode 99 "$e"
    done
  done
  grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|rc=' "$log" | head -30 | sed 's/^/   /'
  end_phase sanitize
}

do_bench() {
  ensure_built
  begin_phase bench
  if ! has_gpu; then note "no GPU"; phase_status=skipped; end_phase bench; return; fi
  step "dcgan_step --device cuda --config all" "$bench_timeout" \
    "$build/benchmarks/dcgan_step" --device cuda --config all
  step "kernel_bench --impl cuda" "$bench_timeout" "$build/benchmarks/kernel_bench" --impl cuda
  if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    step "compare_pytorch (eager, cudnn.benchmark off and on)" "$bench_timeout" \
      benchmarks/compare_pytorch.sh --device cuda --config 64rgb_b128 --build "$build" \
      --cudnn-benchmark --out "$out/compare.jsonl"
    if python3 -c 'import torch, sys; sys.exit(0 if hasattr(torch, "compile") else 1)' 2>/dev/null; then
      step "compare_pytorch --compile (1 round)" "$bench_timeout" benchmarks/compare_pytorch.sh \
        --device cuda --config 64rgb_b128 --build "$build" --compile --cudnn-benchmark --rounds 1 \
        --out "$out/compare_compile.jsonl"
      # One results file for both calls: the device tool returns at most 8 files.
      [[ -f $out/compare_compile.jsonl ]] && { cat "$out/compare_compile.jsonl" >>"$out/compare.jsonl"; rm -f "$out/compare_compile.jsonl"; }
    fi
  else
    note "no CUDA PyTorch: compare_pytorch skipped"
  fi
  end_phase bench
}

# ---- run -----------------------------------------------------------------------------------
echo "gpu-check: phases ${phases[*]}; out $out; build $build; budget ${budget}s"
for p in "${phases[@]}"; do
  if (($(remaining) < 20)); then skip_phase "$p" "out of time budget"; continue; fi
  "do_$p"
done

{
  gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  echo "gpu-check $(date -u +%Y-%m-%dT%H:%MZ) on ${gpu_name:-no GPU}"
  echo "git $(git rev-parse --short HEAD 2>/dev/null); phases ${phases[*]}; ${SECONDS}s of ${budget}s"
  for r in "${results[@]}"; do
    IFS='|' read -r name status secs notes <<<"$r"
    printf '%-9s %-8s %5ss  %s\n' "$name" "$status" "$secs" "$notes"
  done
} >"$summary"
echo
echo "==== summary ($summary)"
cat "$summary"
failed=0
for r in "${results[@]}"; do [[ $r == *"|FAILED|"* ]] && failed=1; done
exit $failed
