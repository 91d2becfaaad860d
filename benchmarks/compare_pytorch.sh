#!/usr/bin/env bash
# The project's headline number: gantry's DCGAN training step against PyTorch's on this
# machine, same architecture, init, batch, thread count and precision.
#
# Runs, alternating A B B' A B B' ... for --rounds rounds (so drift in the machine's load hits
# both sides alike):
#   A  gantry   build/benchmarks/dcgan_step --json        (D frozen during the G update)
#   B  PyTorch  benchmarks/pytorch_dcgan_step.py --mode example   (the example's exact step)
#   B' PyTorch  benchmarks/pytorch_dcgan_step.py --mode freeze    (gantry's freeze, same results)
# and prints one table: each side's median images/s over the rounds and gantry/PyTorch.
#
# Usage: benchmarks/compare_pytorch.sh [--device cpu|cuda] [--config 64rgb_b128[,..]|all]
#          [--threads N] [--rounds N] [--steps N] [--warmup N] [--build DIR] [--compile]
#          [--cudnn-benchmark] [--r1 G] [--r1-every K] [--gp L] [--d-norm batch|instance|layer|none]
#          [--out results.jsonl]
# --r1 / --gp: both sides add the gradient penalties (gantry: dcgan_step --r1 G, and with --gp
# --loss wgan --gp L; PyTorch: the same formulas through torch.autograd.grad(create_graph=True)).
# --d-norm: both sides build D with that norm (PyTorch: InstanceNorm2d/GroupNorm(1, C)/Identity);
# --r1-every K: lazy R1 on both (the mean over whole cycles of K steps).
# CPU: PyTorch is Debian's python3-torch (/usr/bin/python3) on OpenBLAS' OpenMP build
# (scripts/install-deps.sh --optional installs both). GPU: the python3 on PATH with a CUDA
# PyTorch; --compile adds torch.compile rows where PyTorch >= 2; --cudnn-benchmark adds rows
# with torch.backends.cudnn.benchmark on (cuDNN's algorithms timed once per shape, as gantry's
# cuDNN paths always do; PyTorch's default, off, takes cuDNN's heuristic choice).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
device=cpu config=64rgb_b128 threads=2 rounds=3 steps=5 warmup=2 build="" compile=0 cudnn_bench=0 out=""
penalty=()  # the same flags for both sides
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --compile) compile=1; shift ;;
    --cudnn-benchmark) cudnn_bench=1; shift ;;
    --out) out=$2; shift 2 ;;
    --r1|--r1-every|--gp|--d-norm) penalty+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n 2,22p "$0"; exit 0 ;;
    *) echo "compare_pytorch.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

[[ $cudnn_bench == 1 && $device != cuda ]] && { echo "compare_pytorch.sh: --cudnn-benchmark needs --device cuda (it is a cuDNN setting)" >&2; exit 2; }
# gantry's benchmark binary: --build, else the first build dir that has one.
bin=""
if [[ -n "$build" && ! -x "$build/benchmarks/dcgan_step" ]]; then
  echo "compare_pytorch.sh: --build $build has no benchmarks/dcgan_step; build it: cmake --build $build --target dcgan_step" >&2
  exit 1
fi
for d in "$build" "$root/build" "$root/build-bench" "$root/build-release"; do
  [[ -n "$d" && -x "$d/benchmarks/dcgan_step" ]] && { bin="$d/benchmarks/dcgan_step"; break; }
done
[[ -n "$bin" ]] || { echo "compare_pytorch.sh: no dcgan_step found; build it: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build --target dcgan_step (or pass --build DIR)" >&2; exit 1; }

cores=$(nproc --all)
if [[ "$device" == cpu ]]; then
  py=/usr/bin/python3
  blas=/usr/lib/x86_64-linux-gnu/openblas-openmp
  [[ -d "$blas" ]] || { echo "compare_pytorch.sh: $blas is missing: PyTorch would run on the reference BLAS (4-35x slower). Run scripts/install-deps.sh --optional" >&2; exit 1; }
  export LD_LIBRARY_PATH="$blas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export OMP_NUM_THREADS=$threads
  machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $threads threads (of $cores cores)"
else
  py=$(command -v python3)
  machine="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo 'GPU')"
fi
"$py" -c 'import torch' 2>/dev/null || { echo "compare_pytorch.sh: $py has no torch (CPU: scripts/install-deps.sh --optional)" >&2; exit 1; }

results=${out:-$(mktemp /tmp/compare_pytorch.XXXXXX.jsonl)}
: > "$results"
echo "machine: $machine; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "gantry: $bin ($(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'))"
# torch_run SIDE [FLAGS...]: one PyTorch run of this round's $mode, its JSON tagged as SIDE.
torch_run() {
  local side=$1
  shift
  "$py" "$here/pytorch_dcgan_step.py" --device "$device" --config "$config" --threads "$threads" \
      --steps "$steps" --warmup "$warmup" --mode "$mode" --json ${penalty[@]+"${penalty[@]}"} "$@" \
    | sed 's/^{/{"side": "'"$side"'", "round": '"$r"', /' >> "$results"
}
for ((r = 1; r <= rounds; ++r)); do
  echo "round $r/$rounds ..." >&2
  gantry_loss=()
  [[ " ${penalty[*]-} " == *" --gp "* ]] && gantry_loss=(--loss wgan)
  "$bin" --device "$device" --config "$config" --threads "$threads" --steps "$steps" \
      --warmup "$warmup" --json ${gantry_loss[@]+"${gantry_loss[@]}"} ${penalty[@]+"${penalty[@]}"} | sed 's/^{/{"side": "gantry", "round": '"$r"', /' >> "$results"
  for mode in example freeze; do
    torch_run "pytorch-$mode"
    if [[ $cudnn_bench == 1 ]]; then torch_run "pytorch-$mode-cudnn-benchmark" --cudnn-benchmark; fi
    if [[ $compile == 1 ]]; then
      # With cuDNN's benchmark mode too, when asked: Inductor's convolutions are aten's, which
      # follow it, and gantry always times cuDNN's algorithms.
      if [[ $cudnn_bench == 1 ]]; then cflags=(--compile --cudnn-benchmark) side="pytorch-$mode-compile-cudnn-benchmark"
      else cflags=(--compile) side="pytorch-$mode-compile"; fi
      torch_run "$side" "${cflags[@]}" \
        || echo "compare_pytorch.sh: round $r: the torch.compile run ($side) failed (its error is above); the table has no row for it" >&2
    fi
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); raw results: $results"

"$py" - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault((r["config"], r["side"]), []).append(r)
configs = sorted({r["config"] for r in rows})
sides = ["gantry"] + sorted({r["side"] for r in rows if r["side"] != "gantry"})
print("%-12s %-24s %6s %7s %11s %11s %12s %9s %13s %9s" % ("config", "side", "batch", "rounds", "ms/step", "images/s", "(min..max)", "gantry/x", "img/CPU-s", "gantry/x"))
for c in configs:
    g = by.get((c, "gantry"))
    g_ips = statistics.median(r["images_per_s"] for r in g) if g else None
    per_cpu = lambda rs: statistics.median(r["batch"] / (r["cpu_ms_per_step"] * 1e-3) for r in rs if r.get("cpu_ms_per_step"))
    g_cpu = per_cpu(g) if g and all("cpu_ms_per_step" in r for r in g) else None
    for s in sides:
        rs = by.get((c, s))
        if not rs:
            continue
        ips = [r["images_per_s"] for r in rs]
        med = statistics.median(ips)
        ratio = "" if s == "gantry" or not g_ips else "%.2fx" % (g_ips / med)
        has_cpu = all("cpu_ms_per_step" in r for r in rs)
        cpu = per_cpu(rs) if has_cpu else None
        cpu_ratio = "" if s == "gantry" or not (g_cpu and cpu) else "%.2fx" % (g_cpu / cpu)
        print("%-12s %-24s %6d %7d %11.1f %11.2f %5.1f..%-6.1f %9s %13s %9s" % (
            c, s, rs[0]["batch"], len(rs), statistics.median(r["ms_per_step"] for r in rs), med,
            min(ips), max(ips), ratio, "%.2f" % cpu if cpu else "-", cpu_ratio))
print("images/s: wall clock (the headline). img/CPU-s: images per CPU-second of the process, "
      "steadier on a shared machine; spinning OpenMP threads count as busy, so compare it at --threads 1.")
EOF
