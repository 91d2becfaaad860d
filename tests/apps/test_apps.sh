#!/usr/bin/env bash
# End-to-end tests of dcgan_train and dcgan_generate on tiny data.
# Usage: test_apps.sh BIN_DIR WORK_DIR [case...]   (cases: flags folder resume sigint pytorch report nan)
set -uo pipefail
BIN=$1; WORK=$2; shift 2
CASES=${*:-flags folder resume sigint pytorch report nan}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=$(command -v python3)
TRAIN="$BIN/dcgan_train"; GEN="$BIN/dcgan_generate"
# A tiny model: 32x32, widths 8, so each case runs in seconds.
TINY=(--image-size 32 --ngf 8 --ndf 8 --nz 16 --batch-size 16 --workers 1 --device cpu)
failures=0
fail() { echo "FAIL [$case]: $*"; failures=$((failures + 1)); }
expect_in() { grep -q -- "$2" "$1" || fail "expected '$2' in $1: $(head -c 600 "$1")"; }
rm -rf "$WORK"; mkdir -p "$WORK"

for case in $CASES; do
  echo "== $case"
  case $case in
  flags)
    "$TRAIN" --bogus >"$WORK/o" 2>&1 && fail "--bogus accepted"; expect_in "$WORK/o" "bogus"
    "$TRAIN" --image-size 48 >"$WORK/o" 2>&1 && fail "--image-size 48 accepted"; expect_in "$WORK/o" "32, 64 or 128"
    "$TRAIN" --dataset folder >"$WORK/o" 2>&1 && fail "folder without --data accepted"; expect_in "$WORK/o" "needs --data"
    "$TRAIN" --dataset imagenet >"$WORK/o" 2>&1 && fail "unknown dataset accepted"; expect_in "$WORK/o" "imagenet"
    "$TRAIN" --batch-size 0 >"$WORK/o" 2>&1 && fail "--batch-size 0 accepted"; expect_in "$WORK/o" "batch-size"
    "$TRAIN" --lr -1 >"$WORK/o" 2>&1 && fail "--lr -1 accepted"; expect_in "$WORK/o" "lr"
    "$TRAIN" --device tpu >"$WORK/o" 2>&1 && fail "--device tpu accepted"; expect_in "$WORK/o" "device"
    "$TRAIN" --dataset folder --data "$WORK/nowhere" --out "$WORK/r0" >"$WORK/o" 2>&1 && fail "missing folder accepted"
    expect_in "$WORK/o" "nowhere"
    touch "$WORK/afile"
    "$TRAIN" --out "$WORK/afile/run" >"$WORK/o" 2>&1 && fail "unwritable --out accepted"; expect_in "$WORK/o" "afile"
    "$TRAIN" --resume "$WORK/nowhere" >"$WORK/o" 2>&1 && fail "--resume of nothing accepted"; expect_in "$WORK/o" "config.json"
    "$TRAIN" --help >"$WORK/o" 2>&1 || fail "--help failed"; expect_in "$WORK/o" "--checkpoint-every"
    "$GEN" --checkpoint "$WORK/nowhere" --grid "$WORK/g.png" >"$WORK/o" 2>&1 && fail "missing checkpoint accepted"
    expect_in "$WORK/o" "nowhere"
    ;;
  folder)
    "$PY" "$HERE/fixtures.py" folder "$WORK/imgs" 40
    "$TRAIN" --dataset folder --data "$WORK/imgs" "${TINY[@]}" --max-steps 3 --out "$WORK/rf" >"$WORK/o" 2>&1 \
      || fail "training on a folder with one corrupt file failed: $(tail -5 "$WORK/o")"
    expect_in "$WORK/o" "broken.png"
    expect_in "$WORK/o" "skipped 1"
    [ -f "$WORK/rf/samples/real.png" ] || fail "no samples/real.png"
    "$TRAIN" --dataset folder --data "$WORK/imgs" "${TINY[@]}" --max-steps 3 --strict --out "$WORK/rf2" >"$WORK/o" 2>&1 \
      && fail "--strict accepted a corrupt file"
    expect_in "$WORK/o" "broken.png"
    ;;
  resume)
    # 12 steps in one go against 6 + resume to 12: the same losses (CPU, same seed).
    "$TRAIN" "${TINY[@]}" --max-steps 12 --checkpoint-every 6 --sample-every 6 --seed 7 --out "$WORK/ra" >"$WORK/o" 2>&1 || fail "run A failed"
    "$TRAIN" "${TINY[@]}" --max-steps 6 --checkpoint-every 6 --sample-every 6 --seed 7 --out "$WORK/rb" >"$WORK/o" 2>&1 || fail "run B failed"
    "$TRAIN" --resume "$WORK/rb" --max-steps 12 --device cpu >"$WORK/o" 2>&1 || fail "resume of B failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "resuming"
    [ "$(wc -l <"$WORK/ra/metrics.csv")" = 13 ] || fail "run A has $(wc -l <"$WORK/ra/metrics.csv") metric lines, expected 13"
    [ "$(wc -l <"$WORK/rb/metrics.csv")" = 13 ] || fail "resumed run B has $(wc -l <"$WORK/rb/metrics.csv") metric lines, expected 13"
    paste -d, "$WORK/ra/metrics.csv" "$WORK/rb/metrics.csv" | awk -F, 'NR > 1 {
        for (c = 3; c <= 7; c++) { d = $c - $(c + 9); if (d < 0) d = -d; if (d > 1e-5) { print "step " $1 " column " c ": " $c " vs " $(c + 9); bad = 1 } } }
        END { exit bad }' >"$WORK/diff" || fail "resumed losses differ: $(head -5 "$WORK/diff")"
    "$TRAIN" --resume "$WORK/rb" --image-size 64 >"$WORK/o" 2>&1 && fail "--resume with a changed --image-size accepted"
    expect_in "$WORK/o" "cannot change"
    ;;
  sigint)
    "$TRAIN" "${TINY[@]}" --max-steps 100000 --checkpoint-every 100000 --out "$WORK/rs" >"$WORK/o" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
      [ -f "$WORK/rs/metrics.csv" ] && [ "$(wc -l <"$WORK/rs/metrics.csv")" -ge 4 ] && break
      sleep 0.1
    done
    kill -INT $pid; wait $pid; rc=$?
    [ $rc = 130 ] || fail "SIGINT exit code $rc, expected 130"
    expect_in "$WORK/o" "interrupted"
    [ -f "$WORK/rs/checkpoints/latest" ] || fail "no checkpoint after SIGINT"
    last=$(tail -1 "$WORK/rs/metrics.csv" | cut -d, -f1)
    ck=$(cat "$WORK/rs/checkpoints/latest")
    grep -q "\"step\": $last" "$WORK/rs/checkpoints/$ck/state.json" || fail "checkpoint $ck is not at the last logged step $last"
    ;;
  pytorch)
    "$PY" "$HERE/fixtures.py" pytorch-generator "$WORK/netG.safetensors" 20 8 3
    "$GEN" --checkpoint "$WORK/netG.safetensors" --num 5 --out "$WORK/gen" --grid "$WORK/grid.png" >"$WORK/o" 2>&1 \
      || fail "generating from a PyTorch-layout generator failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "nz 20, ngf 8, 32x32x3"
    for i in 0 1 2 3 4; do [ -s "$WORK/gen/00000$i.png" ] || fail "missing $WORK/gen/00000$i.png"; done
    [ -e "$WORK/gen/000005.png" ] && fail "more images than --num"
    [ -s "$WORK/grid.png" ] || fail "no grid"
    "$PY" "$HERE/fixtures.py" latent "$WORK/z.safetensors" 3 20
    "$GEN" --checkpoint "$WORK/netG.safetensors" --latent "$WORK/z.safetensors" --out "$WORK/genz" >"$WORK/o" 2>&1 || fail "--latent failed"
    [ "$(ls "$WORK/genz" | wc -l)" = 3 ] || fail "--latent with 3 vectors gave $(ls "$WORK/genz" | wc -l) images"
    "$PY" "$HERE/fixtures.py" latent "$WORK/z_bad.safetensors" 3 21
    "$GEN" --checkpoint "$WORK/netG.safetensors" --latent "$WORK/z_bad.safetensors" --out "$WORK/genb" >"$WORK/o" 2>&1 \
      && fail "a latent of the wrong size was accepted"
    expect_in "$WORK/o" "\[3, 21\]"
    "$GEN" --checkpoint "$WORK/netG.safetensors" --interpolate 6 --num 2 --grid "$WORK/interp.png" >"$WORK/o" 2>&1 || fail "--interpolate failed"
    [ -s "$WORK/interp.png" ] || fail "no interpolation grid"
    ;;
  report)
    [ -d "$WORK/ra" ] || "$TRAIN" "${TINY[@]}" --max-steps 12 --sample-every 6 --out "$WORK/ra" >"$WORK/o" 2>&1
    r="$WORK/ra/report.html"
    [ -s "$r" ] || fail "no report.html"
    [ "$(grep -c '<svg' "$r")" -ge 3 ] || fail "report has fewer than 3 charts"
    for id in losses scores real-vs-fake progress config throughput; do grep -q "id=\"$id\"" "$r" || fail "report lacks section $id"; done
    grep -q 'samples/real.png' "$r" || fail "report lacks the real images"
    [ "$(grep -o 'src="samples/step_[0-9]*.png"' "$r" | sort -u | wc -l)" -ge 2 ] || fail "report lacks the sample progression"
    for src in $(grep -o 'src="[^"]*"' "$r" | sed 's/src="//; s/"$//'); do
      [ -f "$WORK/ra/$src" ] || fail "report references $src, which does not exist"
    done
    grep -q 'http' "$r" && grep -v 'xmlns="http://www.w3.org/2000/svg"' "$r" | grep -q 'http' && fail "report references the network"
    # The run directory has what the docs promise.
    head -1 "$WORK/ra/metrics.csv" | grep -qx 'step,epoch,loss_d,loss_g,d_x,d_g_z1,d_g_z2,seconds,images_per_sec' || fail "metrics.csv header"
    grep -q '"gantry_version"' "$WORK/ra/config.json" || fail "config.json lacks the version"
    grep -q '"device": "cpu"' "$WORK/ra/config.json" || fail "config.json lacks the device"
    "$GEN" --checkpoint "$WORK/ra" --num 4 --grid "$WORK/fromrun.png" >"$WORK/o" 2>&1 || fail "generate from a run directory failed"
    ;;
  nan)
    # A model that diverges (here: a checkpoint whose generator holds NaN) must stop the run
    # with the step number, write nothing, and leave the last good checkpoint in place.
    "$TRAIN" "${TINY[@]}" --max-steps 3 --checkpoint-every 3 --out "$WORK/rn" >"$WORK/o" 2>&1 || fail "setup run failed"
    "$PY" "$HERE/fixtures.py" poison "$WORK/rn/checkpoints/step_000003/generator.safetensors"
    "$TRAIN" --resume "$WORK/rn" --max-steps 10 --device cpu >"$WORK/o" 2>&1
    rc=$?
    [ $rc = 3 ] || fail "non-finite loss: exit code $rc, expected 3: $(tail -2 "$WORK/o")"
    expect_in "$WORK/o" "non-finite at step 4"
    expect_in "$WORK/o" "step_000003"
    [ "$(cat "$WORK/rn/checkpoints/latest")" = step_000003 ] || fail "latest checkpoint moved"
    [ -d "$WORK/rn/checkpoints/step_000004" ] && fail "a checkpoint of the diverged model was written"
    ;;
  *) echo "unknown case $case"; failures=$((failures + 1)) ;;
  esac
done
echo "app tests: $failures failure(s)"
[ $failures = 0 ]
