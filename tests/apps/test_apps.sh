#!/usr/bin/env bash
# End-to-end tests of dcgan_train and dcgan_generate on tiny data.
# Usage: test_apps.sh BIN_DIR WORK_DIR [case...]
#   (cases: flags folder datasets resume losses sigint pytorch report nan ema_ada generate_post quality convert
#    gpu_parity host_waits)
# gpu_parity exits 77 (skipped) where --device cuda cannot run; host_waits where the CUDA
# emulator cannot count (any build but GANTRY_CUDA_EMU).
set -uo pipefail
BIN=$1; WORK=$2; shift 2
CASES=${*:-flags folder resume sigint pytorch report nan}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=$(command -v python3)
TRAIN="$BIN/dcgan_train"; GEN="$BIN/dcgan_generate"; EVAL="$BIN/dcgan_eval"; CLF="$BIN/gantry_classifier_train"
CONV="$BIN/gantry_convert"
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
    [ -e "$WORK/r0" ] && fail "a failed start left its run folder $WORK/r0 behind"
    mkdir -p "$WORK/kept"
    "$TRAIN" --dataset folder --data "$WORK/nowhere" --out "$WORK/kept" >"$WORK/o" 2>&1 && fail "missing folder accepted"
    [ -d "$WORK/kept" ] || fail "a failed start removed the --out folder that existed before it"
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
  datasets)
    # torchvision's downloads as they lie under its root (tests/data): the CIFAR python versions.
    SMALL=(--image-size 32 --ngf 8 --ndf 8 --nz 16 --workers 1 --device cpu --max-steps 2)
    "$TRAIN" --dataset cifar10 --data "$HERE/../data" "${SMALL[@]}" --batch-size 5 --out "$WORK/rc10" >"$WORK/o" 2>&1 \
      || fail "training on CIFAR-10's python version failed: $(tail -5 "$WORK/o")"
    expect_in "$WORK/o" "cifar10 (train, 15 images, python version"
    [ "$(wc -l <"$WORK/rc10/metrics.csv")" = 3 ] || fail "CIFAR-10 run: $(wc -l <"$WORK/rc10/metrics.csv") metric lines, expected 3"
    "$TRAIN" --dataset cifar100 --data "$HERE/../data" "${SMALL[@]}" --batch-size 2 --out "$WORK/rc100" >"$WORK/o" 2>&1 \
      || fail "training on CIFAR-100's python version failed: $(tail -5 "$WORK/o")"
    expect_in "$WORK/o" "cifar100 (train, 4 images, python version"
    "$TRAIN" --dataset cifar100 "${SMALL[@]}" >"$WORK/o" 2>&1 && fail "cifar100 without --data accepted"
    expect_in "$WORK/o" "cifar-100-python"
    "$TRAIN" --dataset cifar10 --data "$HERE" "${SMALL[@]}" --out "$WORK/rcx" >"$WORK/o" 2>&1 && fail "a folder without CIFAR accepted"
    expect_in "$WORK/o" "no cifar10 files"
    [ -e "$WORK/rcx" ] && fail "a failed start left its run folder behind"
    # LSUN: LMDB databases (tests/data/lsun, written by python-lmdb), the example's --classes.
    "$TRAIN" --dataset lsun --data "$HERE/../data/lsun" --classes bedroom "${SMALL[@]}" --batch-size 4 \
      --out "$WORK/rl" >"$WORK/o" 2>&1
    if grep -q "without liblmdb" "$WORK/o"; then
      echo "(lsun: this build has no liblmdb; its message is checked)"
    else
      [ -f "$WORK/rl/metrics.csv" ] || fail "training on LSUN failed: $(tail -5 "$WORK/o")"
      expect_in "$WORK/o" "lsun $HERE/../data/lsun (6 images, 1 class)"
      "$TRAIN" --dataset lsun --data "$HERE/../data/lsun" "${SMALL[@]}" --batch-size 4 --out "$WORK/rl2" >"$WORK/o" 2>&1 \
        || fail "training on every LSUN category failed: $(tail -5 "$WORK/o")"
      expect_in "$WORK/o" "(8 images, 2 classes)"
    fi
    "$TRAIN" --classes bedroom "${SMALL[@]}" >"$WORK/o" 2>&1 && fail "--classes without --dataset lsun accepted"
    expect_in "$WORK/o" "needs --dataset lsun"
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
  losses)
    # --loss, --real-label, --lr-g/--lr-d, --spectral-norm and --d-steps: the start line and
    # config.json say what the run optimizes, and a resumed run continues it (the same losses as
    # one run of 6 steps: a resume that fell back to bce, one lr, one D update per step, or lost
    # spectral norm's u and v or the loader's position, two batches per step, would differ from
    # step 4 on).
    L=(--loss lsgan --real-label 0.9 --lr-g 0.0001 --lr-d 0.0004 --spectral-norm --d-steps 2)
    "$TRAIN" "${TINY[@]}" "${L[@]}" --max-steps 6 --checkpoint-every 3 --seed 3 --out "$WORK/la" >"$WORK/o" 2>&1 \
      || fail "lsgan run failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "loss lsgan, lr G 0.0001 D 0.0004, real label 0.9, spectral norm in D, 2 D updates per G update"
    grep -q '"loss": "lsgan"' "$WORK/la/config.json" || fail "config.json lacks the loss"
    grep -q '"lr_d": 0.0004' "$WORK/la/config.json" || fail "config.json lacks lr_d"
    grep -q '"spectral_norm": true' "$WORK/la/config.json" || fail "config.json lacks spectral_norm"
    grep -q '"d_steps": 2' "$WORK/la/config.json" || fail "config.json lacks d_steps"
    expect_in "$WORK/o" "(3750 batches per epoch, 2 per step)"
    grep -aq 'main.0.weight_orig' "$WORK/la/checkpoints/step_000006/discriminator.safetensors" \
      || fail "the spectral-norm D was not saved under PyTorch's names (main.0.weight_orig)"
    "$TRAIN" "${TINY[@]}" "${L[@]}" --max-steps 3 --checkpoint-every 3 --seed 3 --out "$WORK/lb" >"$WORK/o" 2>&1 || fail "lsgan run B failed"
    "$TRAIN" --resume "$WORK/lb" --max-steps 6 --device cpu >"$WORK/o" 2>&1 || fail "resume of the lsgan run failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "loss lsgan, lr G 0.0001 D 0.0004, real label 0.9, spectral norm in D, 2 D updates per G update"
    cmp -s "$WORK/la/metrics.csv" "$WORK/lb/metrics.csv" || paste -d, "$WORK/la/metrics.csv" "$WORK/lb/metrics.csv" | awk -F, 'NR > 1 {
        for (c = 3; c <= 7; c++) { d = $c - $(c + 9); if (d < 0) d = -d; if (d > 1e-5) { print "step " $1 " column " c ": " $c " vs " $(c + 9); bad = 1 } } }
        END { exit bad }' >"$WORK/diff" || fail "the resumed lsgan run differs: $(head -3 "$WORK/diff")"
    # The gradient penalties (WGAN-GP with R1 on top, the paper's layer-norm critic): a penalty
    # column, and a resumed run continues them exactly (the interpolation weights come from the
    # saved noise stream).
    P=(--loss wgan --gp 10 --r1 0.5 --d-steps 2 --lr 0.0001 --beta1 0 --beta2 0.9 --d-norm layer)
    "$TRAIN" "${TINY[@]}" "${P[@]}" --max-steps 4 --checkpoint-every 2 --seed 4 --out "$WORK/pa" >"$WORK/o" 2>&1 \
      || fail "the wgan-gp run failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "loss wgan, lr 0.0001, layer norm in D, 2 D updates per G update, R1 penalty 0.5, gradient penalty 10"
    grep -q "note: --gp with D's batch norm" "$WORK/o" && fail "the batch-norm note was printed for --d-norm layer"
    grep -q '"d_norm": "layer"' "$WORK/pa/config.json" || fail "config.json lacks d_norm"
    D4="$WORK/pa/checkpoints/step_000004/discriminator.safetensors"
    grep -aq 'main.3.weight' "$D4" && ! grep -aq 'main.3.running_mean' "$D4" \
      || fail "the layer-norm D was not saved as GroupNorm's weight and bias (no running statistics)"
    head -1 "$WORK/pa/metrics.csv" | grep -q ',images_per_sec,penalty$' || fail "no penalty column: $(head -1 "$WORK/pa/metrics.csv")"
    awk -F, 'NR > 1 && !($10 > 0) { bad = 1 } END { exit bad }' "$WORK/pa/metrics.csv" || fail "a penalty <= 0: $(cat "$WORK/pa/metrics.csv")"
    "$TRAIN" "${TINY[@]}" "${P[@]}" --max-steps 2 --checkpoint-every 2 --seed 4 --out "$WORK/pb" >"$WORK/o" 2>&1 || fail "wgan-gp run B failed"
    "$TRAIN" --resume "$WORK/pb" --max-steps 4 --device cpu >"$WORK/o" 2>&1 || fail "resume of the wgan-gp run failed: $(tail -3 "$WORK/o")"
    paste -d, "$WORK/pa/metrics.csv" "$WORK/pb/metrics.csv" | awk -F, 'NR > 1 {
        for (c = 3; c <= 10; c++) { if (c == 8 || c == 9) continue; d = $c - $(c + 10); if (d < 0) d = -d; if (d > 1e-5) { print "step " $1 " column " c ": " $c " vs " $(c + 10); bad = 1 } } }
        END { exit bad }' >"$WORK/diff" || fail "the resumed wgan-gp run differs: $(head -3 "$WORK/diff")"
    # Lazy R1 (--r1-every 2): R1 on odd steps only, and a run resumed at step 3 keeps the cadence
    # (a count restarted at 0 would put R1 on step 4).
    R=(--r1 0.5 --r1-every 2)
    "$TRAIN" "${TINY[@]}" "${R[@]}" --max-steps 5 --checkpoint-every 3 --seed 5 --out "$WORK/ra" >"$WORK/o" 2>&1 \
      || fail "the lazy R1 run failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "R1 penalty 0.5 every 2 D updates"
    [ "$(cut -d, -f10 "$WORK/ra/metrics.csv" | tail -n +2 | awk '{ printf "%s", ($1 > 0) ? "R" : "-" }')" = "R-R-R" ] \
      || fail "lazy R1's penalty column is not on, off, on, off, on: $(cut -d, -f10 "$WORK/ra/metrics.csv" | paste -sd' ')"
    "$TRAIN" "${TINY[@]}" "${R[@]}" --max-steps 3 --checkpoint-every 3 --seed 5 --out "$WORK/rb" >"$WORK/o" 2>&1 || fail "lazy R1 run B failed"
    "$TRAIN" --resume "$WORK/rb" --max-steps 5 --device cpu >"$WORK/o" 2>&1 || fail "resume of the lazy R1 run failed: $(tail -3 "$WORK/o")"
    paste -d, "$WORK/ra/metrics.csv" "$WORK/rb/metrics.csv" | awk -F, 'NR > 1 {
        for (c = 3; c <= 10; c++) { if (c == 8 || c == 9) continue; d = $c - $(c + 10); if (d < 0) d = -d; if (d > 1e-5) { print "step " $1 " column " c ": " $c " vs " $(c + 10); bad = 1 } } }
        END { exit bad }' >"$WORK/diff" || fail "the resumed lazy R1 run differs: $(head -3 "$WORK/diff")"
    "$TRAIN" "${TINY[@]}" --r1-every 4 --max-steps 1 --out "$WORK/lx" >"$WORK/o" 2>&1 && fail "--r1-every without --r1 was accepted"
    expect_in "$WORK/o" "makes R1 lazy: give --r1 GAMMA too"
    "$TRAIN" --resume "$WORK/pb" --gp 1 >"$WORK/o" 2>&1 && fail "--resume with another --gp was accepted"
    expect_in "$WORK/o" "gp cannot change when resuming"
    "$TRAIN" --resume "$WORK/pb" --d-norm batch >"$WORK/o" 2>&1 && fail "--resume with another --d-norm was accepted"
    expect_in "$WORK/o" "d-norm cannot change when resuming"
    # D's norm travels with the files (instance and layer norm have the same keys): --best-of
    # scores with the run's layer-norm D; --netD refuses a run whose --d-norm differs from the
    # file's record; gantry_convert writes the record into the .pth, and --start-from takes it
    # and refuses a contradicting flag.
    "$GEN" --checkpoint "$WORK/pa" --num 2 --best-of 4 --grid "$WORK/best.png" --device cpu >"$WORK/o" 2>&1 \
      || fail "--best-of with a layer-norm D failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "scoring with .*discriminator.safetensors (layer norm)"
    "$GEN" --checkpoint "$WORK/pa" --num 2 --best-of 4 --d-norm instance --grid "$WORK/best.png" --device cpu >"$WORK/o" 2>&1 \
      && fail "dcgan_generate --d-norm instance was accepted for a file that records layer"
    expect_in "$WORK/o" "records --d-norm layer (its d_norm metadata); leave the flag out"
    "$TRAIN" "${TINY[@]}" --netD "$D4" --max-steps 1 --out "$WORK/lx" >"$WORK/o" 2>&1 && fail "a layer-norm --netD went into a batch-norm D"
    expect_in "$WORK/o" "records a D with --d-norm layer (its d_norm metadata), but this run builds --d-norm batch: give --d-norm layer"
    "$TRAIN" "${TINY[@]}" --loss wgan --gp 10 --d-norm instance --netD "$D4" --max-steps 1 --out "$WORK/lx" >"$WORK/o" 2>&1 \
      && fail "a layer-norm --netD went into an instance-norm D (the same keys)"
    expect_in "$WORK/o" "give --d-norm layer"
    "$TRAIN" "${TINY[@]}" --loss wgan --gp 10 --d-norm layer --netD "$D4" --max-steps 1 --out "$WORK/pn" >"$WORK/o" 2>&1 \
      || fail "--netD with --d-norm layer failed: $(tail -3 "$WORK/o")"
    if "$CONV" "$WORK/pa" "$WORK/pa.pth" >"$WORK/o" 2>&1; then
      expect_in "$WORK/o" "d_norm (layer)"
      "$TRAIN" "${TINY[@]}" --loss wgan --gp 10 --d-norm batch --start-from "$WORK/pa.pth" --max-steps 5 --out "$WORK/lx" >"$WORK/o" 2>&1 \
        && fail "--start-from a layer-norm run with --d-norm batch was accepted"
      expect_in "$WORK/o" "records a D with --d-norm layer (its d_norm entry), so --d-norm batch cannot continue it"
      "$TRAIN" "${TINY[@]}" --loss wgan --gp 10 --start-from "$WORK/pa.pth" --max-steps 5 --out "$WORK/ps" >"$WORK/o" 2>&1 \
        || fail "--start-from a layer-norm run failed: $(tail -3 "$WORK/o")"
      expect_in "$WORK/o" "layer norm in D"
    else
      expect_in "$WORK/o" "libzip"  # a build without torch.save support says why
    fi
    # WGAN-GP with the example's batch norm: allowed, with a note that points to --d-norm layer.
    "$TRAIN" "${TINY[@]}" --loss wgan --gp 10 --max-steps 1 --out "$WORK/pbn" >"$WORK/o" 2>&1 || fail "wgan-gp with batch norm failed"
    expect_in "$WORK/o" "note: --gp with D's batch norm"
    "$TRAIN" "${TINY[@]}" --d-norm group --max-steps 1 --out "$WORK/lx" >"$WORK/o" 2>&1 && fail "--d-norm group was accepted"
    expect_in "$WORK/o" "d-norm: group not in {batch,instance,layer,none}"
    # Each loss changes the step: the same seed, three different first losses.
    "$TRAIN" "${TINY[@]}" --max-steps 1 --seed 3 --out "$WORK/l_bce" >"$WORK/o" 2>&1 || fail "bce run failed"
    expect_in "$WORK/o" "loss bce, lr 0.0002, run directory"
    "$TRAIN" "${TINY[@]}" --loss hinge --max-steps 1 --seed 3 --out "$WORK/l_hinge" >"$WORK/o" 2>&1 || fail "hinge run failed: $(tail -3 "$WORK/o")"
    a=$(tail -1 "$WORK/l_bce/metrics.csv" | cut -d, -f3); b=$(tail -1 "$WORK/l_hinge/metrics.csv" | cut -d, -f3)
    c=$(sed -n 2p "$WORK/la/metrics.csv" | cut -d, -f3)
    [ "$a" != "$b" ] && [ "$b" != "$c" ] && [ "$a" != "$c" ] || fail "bce, hinge and lsgan gave the same loss_D: $a $b $c"
    # --d-steps K: a step takes K batches, so --epochs counts K batches a step. CIFAR-10's test
    # copy has 15 images, 3 batches of 5: 2 epochs are 3 steps of 2, and step 2 ends in epoch 1.
    C10=(--dataset cifar10 --data "$HERE/../data" --image-size 32 --ngf 8 --ndf 8 --nz 16 --workers 1 --device cpu --batch-size 5)
    "$TRAIN" "${C10[@]}" --epochs 2 --d-steps 2 --seed 3 \
      --out "$WORK/l_k2" >"$WORK/o" 2>&1 || fail "the --d-steps 2 run failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "3 steps (3 batches per epoch, 2 per step)"
    [ "$(wc -l <"$WORK/l_k2/metrics.csv")" = 4 ] || fail "--d-steps 2 --epochs 2: $(wc -l <"$WORK/l_k2/metrics.csv") metric lines, expected 4"
    [ "$(sed -n 3p "$WORK/l_k2/metrics.csv" | cut -d, -f2)" = 1 ] || fail "step 2 of --d-steps 2 should end in epoch 1: $(sed -n 3p "$WORK/l_k2/metrics.csv")"
    "$TRAIN" "${C10[@]}" --epochs 1 --seed 3 \
      --out "$WORK/l_k1" >"$WORK/o" 2>&1 || fail "the --d-steps 1 cifar10 run failed"
    [ "$(sed -n 2p "$WORK/l_k1/metrics.csv" | cut -d, -f5)" != "$(sed -n 2p "$WORK/l_k2/metrics.csv" | cut -d, -f5)" ] \
      || fail "--d-steps 2 gave the same first D(x) as --d-steps 1"
    "$TRAIN" "${C10[@]}" --epochs 1 --d-steps 4 --out "$WORK/lx" >"$WORK/o" 2>&1 \
      && fail "--epochs 1 (3 batches) with --d-steps 4 was accepted"
    expect_in "$WORK/o" "fewer than one step of --d-steps 4"
    "$TRAIN" "${TINY[@]}" --d-steps 0 --max-steps 1 --out "$WORK/lx" >"$WORK/o" 2>&1 && fail "--d-steps 0 was accepted"
    expect_in "$WORK/o" "--d-steps 0: must be at least 1"
    # Settings that cannot work.
    "$TRAIN" "${TINY[@]}" --loss hinge --real-label 0.9 --max-steps 1 --out "$WORK/lx" >"$WORK/o" 2>&1 \
      && fail "--loss hinge --real-label 0.9 was accepted"
    expect_in "$WORK/o" "the hinge loss has none"
    "$TRAIN" "${TINY[@]}" --real-label 1.5 --max-steps 1 --out "$WORK/lx" >"$WORK/o" 2>&1 && fail "--real-label 1.5 was accepted"
    expect_in "$WORK/o" "--real-label 1.5.*must be in (0, 1]"
    "$TRAIN" "${TINY[@]}" --loss wgan --max-steps 1 --out "$WORK/lx" >"$WORK/o" 2>&1 && fail "--loss wgan without --gp or --spectral-norm was accepted"
    expect_in "$WORK/o" "--loss wgan needs D kept Lipschitz: --gp 10"
    "$TRAIN" "${TINY[@]}" --gp -1 --max-steps 1 --out "$WORK/lx" >"$WORK/o" 2>&1 && fail "--gp -1 was accepted"
    expect_in "$WORK/o" "--r1 and --gp must be >= 0"
    "$TRAIN" "${TINY[@]}" --lr-d -1 --max-steps 1 --out "$WORK/lx" >"$WORK/o" 2>&1 && fail "--lr-d -1 was accepted"
    expect_in "$WORK/o" "--lr-g/--lr-d must be positive"
    [ -e "$WORK/lx" ] && fail "a refused start left its run folder"
    "$TRAIN" --resume "$WORK/la" --loss bce >"$WORK/o" 2>&1 && fail "--resume with another --loss was accepted"
    expect_in "$WORK/o" "loss cannot change when resuming"
    "$TRAIN" --resume "$WORK/la" --d-steps 1 >"$WORK/o" 2>&1 && fail "--resume with another --d-steps was accepted"
    expect_in "$WORK/o" "d-steps cannot change when resuming"
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
    # The truncation trick keeps every latent entry in [-T, T]; --save-latents writes the z of the
    # images written, and --latent gives back the same images from it, byte for byte.
    "$GEN" --checkpoint "$WORK/netG.safetensors" --num 6 --seed 3 --truncation 0.5 --save-latents "$WORK/zt/z.safetensors" --out "$WORK/gent" >"$WORK/o" 2>&1 \
      || fail "--truncation --save-latents failed: $(tail -3 "$WORK/o")"
    "$PY" "$HERE/fixtures.py" describe "$WORK/zt/z.safetensors" z >"$WORK/d" || fail "--save-latents wrote no readable z"
    awk '$2 != "6x20x1x1" || $4 > 0.5 { exit 1 }' "$WORK/d" || fail "--truncation 0.5 saved $(cat "$WORK/d")"
    "$GEN" --checkpoint "$WORK/netG.safetensors" --num 6 --seed 3 --save-latents "$WORK/z6.safetensors" --out "$WORK/gen6" >"$WORK/o" 2>&1 || fail "--save-latents failed"
    "$PY" "$HERE/fixtures.py" describe "$WORK/z6.safetensors" z >"$WORK/d"
    awk '$4 <= 0.5 { exit 1 }' "$WORK/d" || fail "without --truncation all 120 entries lie in [-0.5, 0.5]: $(cat "$WORK/d")"
    "$GEN" --checkpoint "$WORK/netG.safetensors" --latent "$WORK/zt/z.safetensors" --out "$WORK/genrt" >"$WORK/o" 2>&1 || fail "--latent of --save-latents failed"
    for i in 0 1 2 3 4 5; do cmp -s "$WORK/gent/00000$i.png" "$WORK/genrt/00000$i.png" || fail "image $i differs when regenerated from --save-latents"; done
    "$GEN" --checkpoint "$WORK/netG.safetensors" --latent "$WORK/zt/z.safetensors" --truncation 1 --out "$WORK/genx" >"$WORK/o" 2>&1 && fail "--latent with --truncation accepted"
    expect_in "$WORK/o" "--truncation draws the latents; --latent gives them"
    "$GEN" --checkpoint "$WORK/netG.safetensors" --num 2 --save-latents "$WORK/z.pt" --out "$WORK/genx" >"$WORK/o" 2>&1 && fail "--save-latents z.pt accepted"
    expect_in "$WORK/o" "z.pt: the file name must end in .safetensors"
    # Other formats: --format names --out's files, --grid's extension its own; the files are what
    # their names say (JPEG starts FF D8 FF, BMP "BM"); a lower --quality gives a smaller JPEG.
    "$GEN" --checkpoint "$WORK/netG.safetensors" --num 2 --format jpg --quality 80 --out "$WORK/genj" --grid "$WORK/grid.bmp" >"$WORK/o" 2>&1 \
      || fail "--format jpg failed: $(tail -3 "$WORK/o")"
    [ "$(ls "$WORK/genj")" = "$(printf '000000.jpg\n000001.jpg')" ] || fail "--format jpg wrote $(ls "$WORK/genj" | tr '\n' ' ')"
    [ "$(head -c 3 "$WORK/genj/000000.jpg" | od -An -tx1 | tr -d ' ')" = ffd8ff ] || fail "000000.jpg is not a JPEG"
    [ "$(head -c 2 "$WORK/grid.bmp")" = BM ] || fail "--grid grid.bmp is not a BMP"
    "$GEN" --checkpoint "$WORK/netG.safetensors" --num 2 --format jpg --quality 10 --out "$WORK/genj10" >"$WORK/o" 2>&1 || fail "--quality 10 failed"
    cmp -s "$WORK/genj10/000000.jpg" "$WORK/genj/000000.jpg" && fail "--quality 10 and 80 wrote the same JPEG"
    [ "$(stat -c %s "$WORK/genj10/000000.jpg")" -lt "$(stat -c %s "$WORK/genj/000000.jpg")" ] || fail "--quality 10 is not smaller than --quality 80"
    # WebP where this build has libwebp (the GPU machine may not): RIFF....WEBP.
    if "$GEN" --checkpoint "$WORK/netG.safetensors" --num 2 --grid "$WORK/grid.webp" >"$WORK/o" 2>&1; then
      [ "$(head -c 12 "$WORK/grid.webp" | tail -c 4)" = WEBP ] || fail "--grid grid.webp is not a WebP"
    else
      expect_in "$WORK/o" "end the name with one of .png, .jpg, .jpeg, .bmp, .tga$"
    fi
    "$GEN" --checkpoint "$WORK/netG.safetensors" --num 2 --grid "$WORK/grid.gif" >"$WORK/o" 2>&1 && fail "--grid .gif accepted"
    expect_in "$WORK/o" "grid.gif: cannot write that kind of file; end the name with one of .png, .jpg"
    "$GEN" --checkpoint "$WORK/netG.safetensors" --num 2 --quality 50 --out "$WORK/genq" >"$WORK/o" 2>&1 && fail "--quality with png accepted"
    expect_in "$WORK/o" "--quality is for JPEG and WebP files"
    "$GEN" --checkpoint "$WORK/netG.safetensors" --num 2 --format jpg --grid "$WORK/g2.png" >"$WORK/o" 2>&1 && fail "--format without --out accepted"
    expect_in "$WORK/o" "--format names --out's files"
    ;;
  convert)
    # safetensors -> .pth -> safetensors: the same generator each way (the same PNGs, bit for
    # bit), and the errors a user meets on the way.
    "$TRAIN" "${TINY[@]}" --max-steps 2 --out "$WORK/rc" >"$WORK/o" 2>&1 || fail "setup run failed"
    ck="$WORK/rc/checkpoints/$(cat "$WORK/rc/checkpoints/latest")"
    "$CONV" "$ck/generator.safetensors" "$WORK/g.pth" >"$WORK/o" 2>&1 || fail "to .pth failed: $(tail -2 "$WORK/o")"
    expect_in "$WORK/o" "g.pth: 19 tensors (16 F32, 3 I64)"
    head -c 4 "$WORK/g.pth" | od -An -c | grep -q "P   K 003 004" || fail "g.pth is not a ZIP archive"
    "$CONV" "$WORK/g.pth" "$WORK/g2.safetensors" >"$WORK/o" 2>&1 || fail "back to safetensors failed: $(tail -2 "$WORK/o")"
    for g in "$ck/generator.safetensors" "$WORK/g.pth" "$WORK/g2.safetensors"; do
      "$GEN" --checkpoint "$g" --num 3 --seed 5 --device cpu --out "$WORK/img_$(basename "$g")" >"$WORK/o" 2>&1 \
        || fail "dcgan_generate --checkpoint $g failed: $(tail -2 "$WORK/o")"
    done
    for i in 0 1 2; do
      cmp -s "$WORK/img_generator.safetensors/00000$i.png" "$WORK/img_g.pth/00000$i.png" || fail "image $i differs through .pth"
      cmp -s "$WORK/img_generator.safetensors/00000$i.png" "$WORK/img_g2.safetensors/00000$i.png" || fail "image $i differs after the round trip"
    done
    "$CONV" "$WORK/g.pth" "$WORK/g.txt" >"$WORK/o" 2>&1 && fail "an output without a known extension was accepted"
    expect_in "$WORK/o" "use .safetensors, or .pth"
    "$GEN" --checkpoint "$WORK/g.pth" --key netG --num 1 --device cpu --grid "$WORK/k.png" >"$WORK/o" 2>&1 && fail "a missing --key was accepted"
    expect_in "$WORK/o" "--key netG: .*no tensors under 'netG'; the top-level names are: main"
    # --netG/--netD start a run from those weights: the same first step from the .pth files as
    # from the safetensors they came from, and not the step of the random init.
    "$CONV" "$ck/discriminator.safetensors" "$WORK/d.pth" >"$WORK/o" 2>&1 || fail "D to .pth failed"
    "$TRAIN" "${TINY[@]}" --max-steps 1 --seed 7 --netG "$WORK/g.pth" --netD "$WORK/d.pth" --out "$WORK/rp" >"$WORK/o" 2>&1 \
      || fail "--netG/--netD .pth failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "netG starts from .*g.pth: 19 tensors"
    "$TRAIN" "${TINY[@]}" --max-steps 1 --seed 7 --netG "$ck/generator.safetensors" --netD "$ck/discriminator.safetensors" \
      --out "$WORK/rs" >"$WORK/o" 2>&1 || fail "--netG/--netD .safetensors failed: $(tail -3 "$WORK/o")"
    "$TRAIN" "${TINY[@]}" --max-steps 1 --seed 7 --out "$WORK/ri" >"$WORK/o" 2>&1 || fail "plain run failed"
    [ "$(cut -d, -f1-7 "$WORK/rp/metrics.csv")" = "$(cut -d, -f1-7 "$WORK/rs/metrics.csv")" ] || fail "first step from .pth differs from .safetensors"
    [ "$(cut -d, -f1-7 "$WORK/rp/metrics.csv")" = "$(cut -d, -f1-7 "$WORK/ri/metrics.csv")" ] && fail "--netG/--netD changed nothing"
    "$TRAIN" --image-size 32 --ngf 16 --ndf 8 --nz 16 --batch-size 16 --workers 1 --device cpu --max-steps 1 \
      --netG "$WORK/g.pth" --out "$WORK/rw" >"$WORK/o" 2>&1 && fail "--netG of another width was accepted"
    expect_in "$WORK/o" "holds a model built with --image-size 32 --nz 16 --ngf 8 --channels 1"
    "$TRAIN" --resume "$WORK/rp" --netG "$WORK/g.pth" >"$WORK/o" 2>&1 && fail "--netG with --resume was accepted"
    expect_in "$WORK/o" "netG cannot change when resuming"
    # A whole run as one torch training checkpoint, and --start-from it: the models, the Adam
    # states (their step counts go on: 2 -> 3) and the architecture come from the file.
    "$CONV" "$WORK/rc" "$WORK/run.pth" >"$WORK/o" 2>&1 || fail "run to .pth failed: $(tail -2 "$WORK/o")"
    expect_in "$WORK/o" "a training checkpoint from .*step_000002 (step 2, epoch 0): netG, netD, optimizerG, optimizerD"
    "$TRAIN" --batch-size 16 --workers 1 --device cpu --max-steps 1 --start-from "$WORK/run.pth" --out "$WORK/rf" >"$WORK/o" 2>&1 \
      || fail "--start-from failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "starting from .*run.pth: generator 'netG', discriminator 'netD', Adam state 'optimizerG' (step 2), Adam state 'optimizerD' (step 2); lr 0.0002"
    grep -q '"ngf": 8' "$WORK/rf/config.json" || fail "--start-from did not take the file's ngf"
    "$CONV" "$WORK/rf/" "$WORK/rf.pth" >"$WORK/o" 2>&1 || fail "second run to .pth failed: $(tail -2 "$WORK/o")"
    "$TRAIN" --batch-size 16 --workers 1 --device cpu --max-steps 1 --start-from "$WORK/rf.pth" --lr 0.001 --out "$WORK/rf2" >"$WORK/o" 2>&1 \
      || fail "--start-from the second run failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "--lr 0.001 is used instead of the checkpoint's 0.0002"
    expect_in "$WORK/o" "Adam state 'optimizerG' (step 3)"
    # A TTUR run keeps its two lrs through .pth and --start-from; --lr-d overrides one of them.
    "$TRAIN" "${TINY[@]}" --max-steps 1 --lr-g 0.0001 --lr-d 0.0004 --out "$WORK/rtt" >"$WORK/o" 2>&1 || fail "TTUR run failed"
    "$CONV" "$WORK/rtt" "$WORK/rtt.pth" >"$WORK/o" 2>&1 || fail "TTUR run to .pth failed: $(tail -2 "$WORK/o")"
    "$TRAIN" --batch-size 16 --workers 1 --device cpu --max-steps 1 --start-from "$WORK/rtt.pth" --out "$WORK/rtt2" >"$WORK/o" 2>&1 \
      || fail "--start-from the TTUR run failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "(step 1); lr G 0.0001, D 0.0004, betas (0.5, 0.999)"
    expect_in "$WORK/o" "loss bce, lr G 0.0001 D 0.0004"
    "$TRAIN" --batch-size 16 --workers 1 --device cpu --max-steps 1 --start-from "$WORK/rtt.pth" --lr-d 0.0003 --out "$WORK/rtt3" >"$WORK/o" 2>&1 \
      || fail "--start-from the TTUR run with --lr-d failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "--lr-d 0.0003 is used instead of the checkpoint's 0.0004"
    expect_in "$WORK/o" "lr G 0.0001 D 0.0003"
    # Spectral norm comes from the file's D (weight_orig); a plain D cannot continue with it, and
    # --netD of a spectral-norm D into a plain run names the flag that would take it.
    "$TRAIN" "${TINY[@]}" --max-steps 1 --spectral-norm --loss hinge --out "$WORK/rsn" >"$WORK/o" 2>&1 || fail "spectral-norm run failed"
    "$CONV" "$WORK/rsn" "$WORK/rsn.pth" >"$WORK/o" 2>&1 || fail "spectral-norm run to .pth failed: $(tail -2 "$WORK/o")"
    "$TRAIN" --batch-size 16 --workers 1 --device cpu --max-steps 1 --start-from "$WORK/rsn.pth" --loss hinge --out "$WORK/rsn2" >"$WORK/o" 2>&1 \
      || fail "--start-from the spectral-norm run failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "loss hinge, lr 0.0002, spectral norm in D"
    "$TRAIN" --batch-size 16 --workers 1 --device cpu --max-steps 1 --start-from "$WORK/run.pth" --spectral-norm --out "$WORK/rx" >"$WORK/o" 2>&1 \
      && fail "--start-from a plain D with --spectral-norm was accepted"
    expect_in "$WORK/o" "has no spectral norm"
    "$CONV" "$WORK/rsn/checkpoints/step_000001/discriminator.safetensors" "$WORK/dsn.pth" >"$WORK/o" 2>&1 || fail "SN D to .pth failed"
    "$TRAIN" "${TINY[@]}" --max-steps 1 --netD "$WORK/dsn.pth" --out "$WORK/rx" >"$WORK/o" 2>&1 && fail "--netD of a spectral-norm D into a plain run was accepted"
    expect_in "$WORK/o" "holds a model built with --image-size 32 --ndf 8 --channels 1 --spectral-norm"
    # The parametrizations form (torch.nn.utils.parametrizations.spectral_norm's names): saved,
    # resumed exactly, found by --start-from, and a mismatched form or a form alone refused.
    P=(--loss hinge --spectral-norm --spectral-norm-form parametrizations --checkpoint-every 2 --seed 4)
    "$TRAIN" "${TINY[@]}" "${P[@]}" --max-steps 4 --out "$WORK/rp" >"$WORK/o" 2>&1 || fail "parametrizations run failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "spectral norm in D (parametrizations)"
    grep -q '"spectral_norm_form": "parametrizations"' "$WORK/rp/config.json" || fail "config.json lacks spectral_norm_form"
    grep -aq 'main.0.parametrizations.weight.original' "$WORK/rp/checkpoints/step_000004/discriminator.safetensors" \
      || fail "the parametrizations D was not saved under PyTorch's names"
    grep -aq 'weight_orig' "$WORK/rp/checkpoints/step_000004/discriminator.safetensors" && fail "the parametrizations D holds weight_orig"
    "$TRAIN" "${TINY[@]}" "${P[@]}" --max-steps 2 --out "$WORK/rp2" >"$WORK/o" 2>&1 || fail "parametrizations run B failed"
    "$TRAIN" --resume "$WORK/rp2" --max-steps 4 --device cpu >"$WORK/o" 2>&1 || fail "resume of the parametrizations run failed: $(tail -3 "$WORK/o")"
    cmp -s "$WORK/rp/checkpoints/step_000004/discriminator.safetensors" "$WORK/rp2/checkpoints/step_000004/discriminator.safetensors" \
      || fail "the resumed parametrizations run's D differs from the uninterrupted run's"
    "$CONV" "$WORK/rp" "$WORK/rp.pth" >"$WORK/o" 2>&1 || fail "parametrizations run to .pth failed: $(tail -3 "$WORK/o")"
    "$TRAIN" --batch-size 16 --workers 1 --device cpu --max-steps 1 --start-from "$WORK/rp.pth" --loss hinge --out "$WORK/rp3" >"$WORK/o" 2>&1 \
      || fail "--start-from the parametrizations run failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "spectral norm in D (parametrizations)"
    "$TRAIN" --batch-size 16 --workers 1 --device cpu --max-steps 1 --start-from "$WORK/rp.pth" --loss hinge --spectral-norm-form classic \
      --out "$WORK/rx" >"$WORK/o" 2>&1 && fail "--start-from a parametrizations D with --spectral-norm-form classic was accepted"
    expect_in "$WORK/o" "has the parametrizations spectral norm (main.0.parametrizations.weight.original), so --spectral-norm-form classic cannot continue it"
    "$TRAIN" "${TINY[@]}" --loss hinge --spectral-norm --max-steps 1 --netD "$WORK/rp/checkpoints/step_000004/discriminator.safetensors" \
      --out "$WORK/rx" >"$WORK/o" 2>&1 && fail "--netD of a parametrizations D into a classic run was accepted"
    expect_in "$WORK/o" "holds a model built with --image-size 32 --ndf 8 --channels 1 --spectral-norm --spectral-norm-form parametrizations"
    "$TRAIN" "${TINY[@]}" --spectral-norm-form parametrizations --max-steps 1 --out "$WORK/rx" >"$WORK/o" 2>&1 \
      && fail "--spectral-norm-form without --spectral-norm was accepted"
    expect_in "$WORK/o" "give --spectral-norm too"
    # PyTorch 1.13's run under its own names ({"G", "D", "opt_gen", "opt_disc"}, 32x32 gray).
    "$TRAIN" --batch-size 16 --workers 1 --device cpu --max-steps 1 --start-from "$HERE/../data/torch_1_13_dcgan_training.pth" \
      --out "$WORK/rt" >"$WORK/o" 2>&1 || fail "--start-from PyTorch's checkpoint failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "generator 'G', discriminator 'D', Adam state 'opt_gen' (step 2), Adam state 'opt_disc' (step 2)"
    "$TRAIN" "${TINY[@]}" --max-steps 1 --start-from "$WORK/run.pth" --netG "$WORK/g.pth" --out "$WORK/rx" >"$WORK/o" 2>&1 \
      && fail "--start-from with --netG was accepted"
    expect_in "$WORK/o" "give it or --netG/--netD, not both"
    "$TRAIN" --batch-size 16 --workers 1 --device cpu --max-steps 1 --start-from "$WORK/run.pth" --ngf 16 --out "$WORK/rx" >"$WORK/o" 2>&1 \
      && fail "--start-from with another --ngf was accepted"
    expect_in "$WORK/o" "'netG' is not the model this run builds"
    [ -e "$WORK/rx" ] && fail "a failed --start-from left its run folder"
    "$TRAIN" --start-from "$HERE/../data/torch_1_13_checkpoint.pth" --max-steps 1 --out "$WORK/rx" >"$WORK/o" 2>&1 \
      && fail "--start-from a file without a DCGAN was accepted"
    expect_in "$WORK/o" "no DCGAN generator in it (its keys: netG, view, row0"
    "$CONV" "$WORK/rc" "$WORK/run.safetensors" >"$WORK/o" 2>&1 && fail "a run converted to .safetensors"
    expect_in "$WORK/o" "a run becomes one torch training checkpoint, so give a .pth path"
    # PyTorch's own training checkpoint (tests/data): the error names the models it holds.
    "$GEN" --checkpoint "$HERE/../data/torch_1_13_checkpoint.pth" --num 1 --device cpu --grid "$WORK/n.png" >"$WORK/o" 2>&1 \
      && fail "a nested checkpoint without --key was accepted"
    expect_in "$WORK/o" "holds models under 'netG': give --key with one of them"
    echo "not a checkpoint" >"$WORK/text.pth"
    "$GEN" --checkpoint "$WORK/text.pth" --num 1 --device cpu --grid "$WORK/t.png" >"$WORK/o" 2>&1 && fail "a text file was accepted"
    expect_in "$WORK/o" "text.pth.*not a torch.save archive"
    ;;
  report)
    [ -d "$WORK/ra" ] || "$TRAIN" "${TINY[@]}" --max-steps 12 --sample-every 6 --out "$WORK/ra" >"$WORK/o" 2>&1
    r="$WORK/ra/report.html"
    [ -s "$r" ] || fail "no report.html"
    [ "$(grep -c '<svg' "$r")" -ge 3 ] || fail "report has fewer than 3 charts"
    for id in losses scores real-vs-fake progress config throughput; do grep -q "id=\"$id\"" "$r" || fail "report lacks section $id"; done
    grep -q 'samples/real.png' "$r" || fail "report lacks the real images"
    last_epoch=$(tail -1 "$WORK/ra/metrics.csv" | cut -d, -f2)
    grep -q "id=\"epoch\">$((last_epoch + 1))<" "$r" || fail "report's epoch is not the console's 1-based epoch $((last_epoch + 1))"
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
  ema_ada)
    # --ema and --ada: extra checkpoint files, the ada_p column, and exact resume with both.
    Q=(--ema 0.9 --ada --ada-speed 200 --ada-interval 2 --seed 5)
    "$TRAIN" "${TINY[@]}" "${Q[@]}" --max-steps 10 --checkpoint-every 5 --sample-every 5 --out "$WORK/qa" >"$WORK/o" 2>&1 || fail "run A failed: $(tail -3 "$WORK/o")"
    "$TRAIN" "${TINY[@]}" "${Q[@]}" --max-steps 5 --checkpoint-every 5 --sample-every 5 --out "$WORK/qb" >"$WORK/o" 2>&1 || fail "run B failed"
    "$TRAIN" --resume "$WORK/qb" --max-steps 10 --device cpu >"$WORK/o" 2>&1 || fail "resume of B failed: $(tail -3 "$WORK/o")"
    head -1 "$WORK/qa/metrics.csv" | grep -qx 'step,epoch,loss_d,loss_g,d_x,d_g_z1,d_g_z2,seconds,images_per_sec,ada_p' || fail "metrics header with --ada: $(head -1 "$WORK/qa/metrics.csv")"
    ck="$WORK/qa/checkpoints/$(cat "$WORK/qa/checkpoints/latest")"
    [ -s "$ck/generator_ema.safetensors" ] || fail "no generator_ema.safetensors in $ck"
    grep -q '"p"' "$ck/augment.json" || fail "no ADA state in $ck/augment.json"
    awk -F, 'NR > 1 && $10 > 0 { up = 1 } END { exit !up }' "$WORK/qa/metrics.csv" || fail "ada_p never rose above 0 (speed 200)"
    paste -d, "$WORK/qa/metrics.csv" "$WORK/qb/metrics.csv" | awk -F, 'NR > 1 {
        for (c = 3; c <= 7; c++) { d = $c - $(c + 10); if (d < 0) d = -d; if (d > 1e-5) { print "step " $1 " column " c ": " $c " vs " $(c + 10); bad = 1 } }
        if ($10 != $20) { print "step " $1 " ada_p " $10 " vs " $20; bad = 1 } }
        END { exit bad }' >"$WORK/diff" || fail "resumed run with --ema --ada differs: $(head -5 "$WORK/diff")"
    cmp -s "$ck/generator_ema.safetensors" "$WORK/qb/checkpoints/$(cat "$WORK/qb/checkpoints/latest")/generator_ema.safetensors" \
      || fail "EMA generator after resume differs from the uninterrupted run"
    grep -q 'id="metric-ada_p"' "$WORK/qa/report.html" || fail "report lacks the ada_p chart"
    "$GEN" --checkpoint "$WORK/qa" --num 4 --grid "$WORK/ema.png" >"$WORK/o" 2>&1 || fail "generate from an EMA run failed"
    expect_in "$WORK/o" "generator_ema.safetensors"
    "$GEN" --checkpoint "$WORK/qa" --no-ema --num 4 --grid "$WORK/raw.png" >"$WORK/o" 2>&1 || fail "generate --no-ema failed"
    grep -q "generator_ema" "$WORK/o" && fail "--no-ema still used the EMA generator"
    "$TRAIN" --resume "$WORK/qb" --ada-target 0.7 >"$WORK/o" 2>&1 && fail "--resume with a changed --ada-target accepted"
    # --ema-rampup (StyleGAN2-ADA's): the start line says so, config.json keeps it, and a resumed
    # run continues the ramp-up (its count restored), to the same bytes of the EMA generator.
    E=(--ema 0.999 --ema-rampup 0.05 --seed 6)
    "$TRAIN" "${TINY[@]}" "${E[@]}" --max-steps 6 --checkpoint-every 3 --out "$WORK/ea" >"$WORK/o" 2>&1 || fail "--ema-rampup run failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "EMA generator with decay 0.999, ramped up as StyleGAN2-ADA's"
    grep -q '"ema_rampup": 0.05' "$WORK/ea/config.json" || fail "config.json lacks ema_rampup"
    "$TRAIN" "${TINY[@]}" "${E[@]}" --max-steps 3 --checkpoint-every 3 --out "$WORK/eb" >"$WORK/o" 2>&1 || fail "--ema-rampup run B failed"
    "$TRAIN" --resume "$WORK/eb" --max-steps 6 --device cpu >"$WORK/o" 2>&1 || fail "resume of the --ema-rampup run failed: $(tail -3 "$WORK/o")"
    cmp -s "$WORK/ea/checkpoints/step_000006/generator_ema.safetensors" "$WORK/eb/checkpoints/step_000006/generator_ema.safetensors" \
      || fail "the resumed --ema-rampup run's EMA generator differs from the uninterrupted run's"
    "$TRAIN" "${TINY[@]}" --ema 0.999 --seed 6 --max-steps 6 --checkpoint-every 6 --out "$WORK/en" >"$WORK/o" 2>&1 || fail "--ema run failed"
    cmp -s "$WORK/ea/checkpoints/step_000006/generator_ema.safetensors" "$WORK/en/checkpoints/step_000006/generator_ema.safetensors" \
      && fail "--ema-rampup made no difference to the EMA generator"
    "$TRAIN" "${TINY[@]}" --ema-rampup 0.05 --max-steps 1 --out "$WORK/ex" >"$WORK/o" 2>&1 && fail "--ema-rampup without --ema was accepted"
    expect_in "$WORK/o" "give --ema DECAY too"
    "$TRAIN" --ema 1.5 >"$WORK/o" 2>&1 && fail "--ema 1.5 accepted"; expect_in "$WORK/o" "ema"
    # With --d-steps 3, ADA tallies the real batches of all three D updates: every adjustment
    # moves p by 3 x 16 images / --ada-speed 4800 = 0.01 (one batch's tally would move it 0.0033).
    "$TRAIN" "${TINY[@]}" --ada --ada-speed 4800 --ada-interval 1 --ada-target 0.01 --d-steps 3 --max-steps 6 --seed 5 \
      --out "$WORK/q3" >"$WORK/o" 2>&1 || fail "--ada --d-steps 3 failed: $(tail -3 "$WORK/o")"
    awk -F, 'NR > 1 { d = $10 - prev; prev = $10; if (d < 0) d = -d; if (d > 0) moved = 1
                      if (d > 0 && (d - 0.01 > 1e-6 || 0.01 - d > 1e-6)) { print "step " $1 ": p moved by " d; bad = 1 } }
        END { exit bad || !moved }' "$WORK/q3/metrics.csv" >"$WORK/diff" \
      || fail "--d-steps 3: ADA's p did not move by 0.01 per adjustment: $(head -3 "$WORK/diff") $(cut -d, -f10 "$WORK/q3/metrics.csv" | tr '\n' ' ')"
    # R1 with ADA: by default at the reals through the augmentation (StyleGAN2-ADA), with
    # --r1-at augmented at the images D sees. Identical while p is 0, different once p rises;
    # a resumed run continues exactly; a run from before --r1-at (no r1_at in its config.json)
    # resumes with the penalty where it had it.
    A=(--ada --ada-speed 200 --ada-interval 1 --r1 0.5 --seed 5)
    "$TRAIN" "${TINY[@]}" "${A[@]}" --max-steps 6 --checkpoint-every 3 --out "$WORK/ar" >"$WORK/o" 2>&1 || fail "--ada --r1 failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "R1 penalty 0.5 at the reals through the augmentation"
    grep -q '"r1_at": "reals"' "$WORK/ar/config.json" || fail "config.json lacks r1_at"
    "$TRAIN" "${TINY[@]}" "${A[@]}" --r1-at augmented --max-steps 6 --checkpoint-every 3 --out "$WORK/aa" >"$WORK/o" 2>&1 || fail "--r1-at augmented failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "R1 penalty 0.5 at the augmented reals"
    paste -d, "$WORK/ar/metrics.csv" "$WORK/aa/metrics.csv" | awk -F, 'NR > 1 { same = ($11 == $22)  # p: the previous row'"'"'s
        if (p == 0 && !same) { print "step " $1 " at p 0: " $11 " vs " $22; bad = 1 }
        if (p > 0 && !same) differ = 1; p = $10 }  END { exit bad || !differ }' >"$WORK/diff" \
      || fail "R1 at the reals and at the augmented reals: equal at p = 0, then different? $(head -3 "$WORK/diff") $(cut -d, -f10,11 "$WORK/ar/metrics.csv" | tr '\n' ' ')"
    "$TRAIN" "${TINY[@]}" "${A[@]}" --max-steps 3 --checkpoint-every 3 --out "$WORK/ab" >"$WORK/o" 2>&1 || fail "--ada --r1 run B failed"
    "$TRAIN" --resume "$WORK/ab" --max-steps 6 --device cpu >"$WORK/o" 2>&1 || fail "resume of --ada --r1 failed: $(tail -3 "$WORK/o")"
    cut -d, -f1-7,10,11 "$WORK/ar/metrics.csv" >"$WORK/m1"; cut -d, -f1-7,10,11 "$WORK/ab/metrics.csv" >"$WORK/m2"
    cmp -s "$WORK/m1" "$WORK/m2" || fail "the resumed --ada --r1 run differs: $(diff "$WORK/m1" "$WORK/m2" | head -4)"
    "$TRAIN" "${TINY[@]}" "${A[@]}" --r1-at augmented --max-steps 3 --checkpoint-every 3 --out "$WORK/ao" >"$WORK/o" 2>&1 || fail "--r1-at augmented run B failed"
    sed -i 's/"r1_at": "augmented",//' "$WORK/ao/config.json"
    grep -q r1_at "$WORK/ao/config.json" && fail "could not remove r1_at from $WORK/ao/config.json"
    "$TRAIN" --resume "$WORK/ao" --max-steps 6 --device cpu >"$WORK/o" 2>&1 || fail "resume of a run from before --r1-at failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "at the augmented reals"
    cut -d, -f1-7,10,11 "$WORK/aa/metrics.csv" >"$WORK/m1"; cut -d, -f1-7,10,11 "$WORK/ao/metrics.csv" >"$WORK/m2"
    cmp -s "$WORK/m1" "$WORK/m2" || fail "a run from before --r1-at did not resume with R1 at the augmented reals: $(diff "$WORK/m1" "$WORK/m2" | head -4)"
    # --ada-geom: the general geometry joins the pipeline; recorded, resumed exactly, and it
    # changes the run (with --ada-target 0.01, p rises from the first adjustment).
    G=(--ada --ada-geom --ada-speed 40 --ada-interval 1 --ada-target 0.01 --r1 0.5 --seed 7)
    "$TRAIN" "${TINY[@]}" "${G[@]}" --max-steps 6 --checkpoint-every 3 --out "$WORK/ga" >"$WORK/o" 2>&1 || fail "--ada-geom failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "ADA: flips, quarter turns, integer shifts, scaling, rotation, fractional shifts"
    grep -q '"ada_geom": true' "$WORK/ga/config.json" || fail "config.json lacks ada_geom"
    "$TRAIN" "${TINY[@]}" "${G[@]}" --max-steps 3 --checkpoint-every 3 --out "$WORK/gb" >"$WORK/o" 2>&1 || fail "--ada-geom run B failed"
    "$TRAIN" --resume "$WORK/gb" --max-steps 6 --device cpu >"$WORK/o" 2>&1 || fail "resume of the --ada-geom run failed: $(tail -3 "$WORK/o")"
    cut -d, -f1-7,10,11 "$WORK/ga/metrics.csv" >"$WORK/m1"; cut -d, -f1-7,10,11 "$WORK/gb/metrics.csv" >"$WORK/m2"
    cmp -s "$WORK/m1" "$WORK/m2" || fail "the resumed --ada-geom run differs: $(diff "$WORK/m1" "$WORK/m2" | head -4)"
    "$TRAIN" "${TINY[@]}" --ada --ada-speed 40 --ada-interval 1 --ada-target 0.01 --r1 0.5 --seed 7 --max-steps 6 --checkpoint-every 6 --out "$WORK/gn" >"$WORK/o" 2>&1 || fail "the run without --ada-geom failed"
    cut -d, -f1-7 "$WORK/gn/metrics.csv" >"$WORK/m2"; cut -d, -f1-7 "$WORK/ga/metrics.csv" >"$WORK/m1"
    cmp -s "$WORK/m1" "$WORK/m2" && fail "--ada-geom made no difference"
    "$TRAIN" "${TINY[@]}" --ada-geom --max-steps 1 --out "$WORK/gx" >"$WORK/o" 2>&1 && fail "--ada-geom without --ada was accepted"
    expect_in "$WORK/o" "give --ada too"
    "$TRAIN" "${TINY[@]}" --r1 0.5 --r1-at augmented --max-steps 1 --out "$WORK/ax" >"$WORK/o" 2>&1 && fail "--r1-at without --ada was accepted"
    expect_in "$WORK/o" "give --r1 GAMMA and --ada too"
    "$TRAIN" --resume "$WORK/ab" --r1-at augmented >"$WORK/o" 2>&1 && fail "--resume with another --r1-at was accepted"
    expect_in "$WORK/o" "r1-at cannot change when resuming"
    # --subset: a fixed random subset of the data (StyleGAN2-ADA's), recorded and kept on resume.
    "$TRAIN" "${TINY[@]}" --subset 40 --ada --max-steps 3 --checkpoint-every 3 --out "$WORK/sa" >"$WORK/o" 2>&1 || fail "--subset failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "a subset of 40 images"
    expect_in "$WORK/o" "3 steps (2 per epoch)"
    grep -q '"subset": 40' "$WORK/sa/config.json" || fail "config.json lacks subset"
    "$TRAIN" --resume "$WORK/sa" --max-steps 4 --device cpu >"$WORK/o" 2>&1 || fail "resume of the --subset run failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "a subset of 40 images"
    "$TRAIN" --resume "$WORK/sa" --subset 50 >"$WORK/o" 2>&1 && fail "--resume with another --subset was accepted"
    expect_in "$WORK/o" "subset cannot change when resuming"
    "$TRAIN" "${TINY[@]}" --subset 70000 --max-steps 1 --out "$WORK/sx" >"$WORK/o" 2>&1 && fail "--subset above the dataset's size was accepted"
    expect_in "$WORK/o" "is more than the 60000 images"
    ;;
  generate_post)
    [ -d "$WORK/qa" ] || "$TRAIN" "${TINY[@]}" --max-steps 3 --out "$WORK/qa" >"$WORK/o" 2>&1
    "$GEN" --checkpoint "$WORK/qa" --best-of 12 --num 3 --out "$WORK/best" --upscale 2 --median 3 --sharpen --grid "$WORK/best.png" --save-latents "$WORK/best_z.safetensors" >"$WORK/o" 2>&1 \
      || fail "--best-of with post-processing failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "best 3 of 12"
    [ "$(ls "$WORK/best" | wc -l)" = 3 ] || fail "--best-of 12 --num 3 wrote $(ls "$WORK/best" | wc -l) images"
    "$PY" - "$WORK/best/000000.png" <<'PYEOF' || fail "post-processed image is not 64x64"
import struct, sys
d = open(sys.argv[1], "rb").read()
w, h = struct.unpack(">II", d[16:24])
sys.exit(0 if (w, h) == (64, 64) else 1)
PYEOF
    # --save-latents with --best-of: the kept images' z, best first. --num 12 keeps all 12 in D's
    # order, and --latent regenerates those images from its z in that order; the 3 best are its first.
    "$GEN" --checkpoint "$WORK/qa" --best-of 12 --num 12 --out "$WORK/all" --save-latents "$WORK/all_z.safetensors" >"$WORK/o" 2>&1 \
      || fail "--best-of 12 --num 12 failed: $(tail -3 "$WORK/o")"
    "$GEN" --checkpoint "$WORK/qa" --latent "$WORK/all_z.safetensors" --out "$WORK/all_rt" >"$WORK/o" 2>&1 || fail "--latent of --best-of's z failed"
    for f in "$WORK"/all/*.png; do cmp -s "$f" "$WORK/all_rt/$(basename "$f")" || fail "--best-of's saved z do not give its images in its order ($(basename "$f"))"; done
    "$PY" - "$WORK/best_z.safetensors" "$WORK/all_z.safetensors" "$HERE" <<'PYEOF' || fail "--best-of's --save-latents are not the 3 best of the 12 latents"
import sys
sys.path.insert(0, sys.argv[3])
from fixtures import read_f32
def rows(path):
    shape, v = read_f32(path, "z")
    k = len(v) // shape[0]
    return [v[i * k:(i + 1) * k] for i in range(shape[0])]
best, every = rows(sys.argv[1]), rows(sys.argv[2])
sys.exit(0 if len(best) == 3 and len(every) == 12 and best == every[:3] else 1)
PYEOF
    [ -f "$WORK/netG.safetensors" ] || "$PY" "$HERE/fixtures.py" pytorch-generator "$WORK/netG.safetensors" 20 8 3
    "$GEN" --checkpoint "$WORK/netG.safetensors" --best-of 8 --num 2 --grid "$WORK/x.png" >"$WORK/o" 2>&1 && fail "--best-of without a discriminator accepted"
    expect_in "$WORK/o" "discriminator"
    "$GEN" --checkpoint "$WORK/qa" --best-of 2 --num 3 --grid "$WORK/x.png" >"$WORK/o" 2>&1 && fail "--best-of smaller than --num accepted"
    "$GEN" --checkpoint "$WORK/qa" --median 2 --grid "$WORK/x.png" >"$WORK/o" 2>&1 && fail "--median 2 accepted"
    ;;
  quality)
    # A classifier on a tiny 2-class folder, dcgan_eval, and KID/FID logged during training.
    [ -d "$WORK/imgs" ] || "$PY" "$HERE/fixtures.py" folder "$WORK/imgs" 40
    "$CLF" --dataset folder --data "$WORK/imgs" --image-size 32 --width 4 --batch-size 8 --max-steps 6 --workers 1 --device cpu --out "$WORK/clf.safetensors" >"$WORK/o" 2>&1 \
      || fail "gantry_classifier_train failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "test accuracy"
    expect_in "$WORK/o" "held-out"
    "$CLF" --dataset folder --data "$WORK/imgs/circles" --max-steps 2 --batch-size 4 --out "$WORK/c1.safetensors" >"$WORK/o" 2>&1 && fail "a one-class folder accepted"
    expect_in "$WORK/o" "at least 2"
    "$TRAIN" --dataset folder --data "$WORK/imgs" "${TINY[@]}" --max-steps 4 --eval-every 2 --eval-num 16 --features "$WORK/clf.safetensors" --ema 0.9 --out "$WORK/qe" >"$WORK/o" 2>&1 \
      || fail "training with --eval-every failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "eval at step 4"
    head -1 "$WORK/qe/metrics.csv" | grep -q ',kid,fid$' || fail "no kid,fid columns: $(head -1 "$WORK/qe/metrics.csv")"
    awk -F, 'NR == 2 && $10 != "" { exit 1 } NR == 3 && $10 == "" { exit 1 }' "$WORK/qe/metrics.csv" || fail "kid should be empty at step 1 and set at step 2: $(cat "$WORK/qe/metrics.csv")"
    grep -q 'id="metric-kid"' "$WORK/qe/report.html" || fail "report lacks the kid chart"
    grep -q 'id="metric-fid"' "$WORK/qe/report.html" || fail "report lacks the fid chart"
    "$EVAL" --checkpoint "$WORK/qe" --features "$WORK/clf.safetensors" --num 16 --subsets 5 --device cpu >"$WORK/o" 2>&1 || fail "dcgan_eval failed: $(tail -3 "$WORK/o")"
    expect_in "$WORK/o" "KID"
    expect_in "$WORK/o" "FID"
    grep -q '"fid"' "$WORK/qe/eval.json" || fail "no eval.json with fid"
    grep -q '"kid_std"' "$WORK/qe/eval.json" || fail "eval.json lacks kid_std"
    # --truncation scores other images (the same seed, truncated latents) and says so in eval.json.
    fid_plain=$(sed -n 's/^FID //p' "$WORK/o")
    "$EVAL" --checkpoint "$WORK/qe" --features "$WORK/clf.safetensors" --num 16 --subsets 5 --device cpu --truncation 0.5 \
      --json "$WORK/qe/eval_t.json" >"$WORK/o" 2>&1 || fail "dcgan_eval --truncation failed: $(tail -3 "$WORK/o")"
    grep -q '"truncation": 0.5' "$WORK/qe/eval_t.json" || fail "eval.json lacks the truncation: $(cat "$WORK/qe/eval_t.json")"
    expect_in "$WORK/o" "note: --truncation with --bn batch"
    [ "$(sed -n 's/^FID //p' "$WORK/o")" != "$fid_plain" ] || fail "--truncation 0.5 gave the untruncated FID $fid_plain"
    "$EVAL" --checkpoint "$WORK/qe" --features "$WORK/clf.safetensors" --num 16 --truncation 0.01 >"$WORK/o" 2>&1 && fail "--truncation 0.01 accepted"
    expect_in "$WORK/o" "give 0 (off) or a threshold from 0.05 to 1000"
    "$EVAL" --checkpoint "$WORK/qe" --features "$WORK/qe/config.json" --num 16 >"$WORK/o" 2>&1 && fail "a non-classifier --features accepted"
    "$TRAIN" --eval-every 5 >"$WORK/o" 2>&1 && fail "--eval-every without --features accepted"; expect_in "$WORK/o" "features"
    ;;
  gpu_parity)
    # The same 3 steps on the GPU and on the CPU (same seed, data and init) log the same
    # losses; then the GPU run's generator, EMA and ADA paths and dcgan_generate/dcgan_eval
    # on the GPU. Runs on a real GPU, and on the CUDA emulator (GANTRY_CUDA_EMU builds).
    # Images of its own, not the default Fashion-MNIST: a GPU machine has no Debian package of it.
    [ -d "$WORK/imgs" ] || "$PY" "$HERE/fixtures.py" folder "$WORK/imgs" 40
    GPU=("${TINY[@]:0:${#TINY[@]}-2}" --dataset folder --data "$WORK/imgs")  # TINY without its trailing --device cpu
    CPU=("${GPU[@]}" --device cpu)
    "$TRAIN" "${CPU[@]}" --max-steps 3 --log-every 1 --out "$WORK/pc" >"$WORK/o" 2>&1 || fail "CPU run failed: $(tail -3 "$WORK/o")"
    if ! "$TRAIN" "${GPU[@]}" --device cuda --max-steps 3 --log-every 1 --out "$WORK/pg" >"$WORK/og" 2>&1; then
      if grep -q "built without CUDA\|no such GPU" "$WORK/og"; then
        echo "SKIPPED: --device cuda cannot run here: $(tail -1 "$WORK/og")"; exit 77
      fi
      fail "GPU run failed: $(tail -3 "$WORK/og")"
    fi
    expect_in "$WORK/og" "training on cuda:0"
    # Columns 3-7: loss_d loss_g d_x d_g_z1 d_g_z2, to 1e-3 relative (fp32 sums in other orders).
    same_losses() {  # CPU_RUN GPU_RUN ROWS
      paste -d, "$1/metrics.csv" "$2/metrics.csv" | awk -F, -v n="$(head -1 "$1/metrics.csv" | awk -F, '{print NF}')" -v want="$3" '
        NR == 1 { next }
        { rows++; for (c = 3; c <= 7; ++c) { a = $c; b = $(c + n); d = a - b; if (d < 0) d = -d; m = a < 0 ? -a : a;
            if (d > 1e-3 * m + 1e-6) { printf "step %s column %d: cpu %s gpu %s\n", $1, c, a, b; bad = 1 } } }
        END { exit (bad || rows != want) }'
    }
    same_losses "$WORK/pc" "$WORK/pg" 3 >"$WORK/diff" || fail "GPU and CPU losses differ: $(cat "$WORK/diff")"
    # The hinge loss (D's scores without the Sigmoid) with spectral norm, TTUR lrs and two D updates
    # per G update (the no-grad fake batch of the first), in full fp32:
    # loss_G = -mean(score) is a mean of scores of both signs, near 0, which turns TF32's 1e-3 per conv
    # into 1 % of it (measured on the emulator's TF32 model; with TF32 off every digit agrees).
    H=(--loss hinge --spectral-norm --lr-g 0.0001 --lr-d 0.0004 --d-steps 2 --max-steps 2 --log-every 1)
    "$TRAIN" "${CPU[@]}" "${H[@]}" --out "$WORK/hc" >"$WORK/o" 2>&1 || fail "CPU hinge run failed: $(tail -3 "$WORK/o")"
    GANTRY_ALLOW_TF32=0 "$TRAIN" "${GPU[@]}" --device cuda "${H[@]}" --out "$WORK/hg" >"$WORK/o" 2>&1 \
      || fail "GPU hinge run failed: $(tail -3 "$WORK/o")"
    same_losses "$WORK/hc" "$WORK/hg" 2 >"$WORK/diff" || fail "GPU and CPU hinge losses differ: $(cat "$WORK/diff")"
    # The gradient penalties: double backward on the device (conv input/weight gradients as ops,
    # batch norm's statistics recomputed), the interpolation weights from the device's Philox.
    Q=(--loss wgan --gp 10 --r1 0.5 --d-steps 2 --max-steps 2 --log-every 1)
    "$TRAIN" "${CPU[@]}" "${Q[@]}" --out "$WORK/qc" >"$WORK/o" 2>&1 || fail "CPU wgan-gp run failed: $(tail -3 "$WORK/o")"
    GANTRY_ALLOW_TF32=0 "$TRAIN" "${GPU[@]}" --device cuda "${Q[@]}" --out "$WORK/qg" >"$WORK/o" 2>&1 \
      || fail "GPU wgan-gp run failed: $(tail -3 "$WORK/o")"
    same_losses "$WORK/qc" "$WORK/qg" 2 >"$WORK/diff" || fail "GPU and CPU wgan-gp losses differ: $(cat "$WORK/diff")"
    # D's other norms (group norm and instance norm are batch norm's kernels on [1, N*G, M]).
    for norm in layer instance; do
      N=(--loss wgan --gp 10 --d-norm $norm --max-steps 2 --log-every 1)
      "$TRAIN" "${CPU[@]}" "${N[@]}" --out "$WORK/nc_$norm" >"$WORK/o" 2>&1 || fail "CPU --d-norm $norm run failed: $(tail -3 "$WORK/o")"
      GANTRY_ALLOW_TF32=0 "$TRAIN" "${GPU[@]}" --device cuda "${N[@]}" --out "$WORK/ng_$norm" >"$WORK/o" 2>&1 \
        || fail "GPU --d-norm $norm run failed: $(tail -3 "$WORK/o")"
      same_losses "$WORK/nc_$norm" "$WORK/ng_$norm" 2 >"$WORK/diff" || fail "GPU and CPU --d-norm $norm losses differ: $(cat "$WORK/diff")"
    done
    # R1 with ADA (and its general geometry) at the reals, through the augmentation: the gathers' recorded scatters on the
    # device (--ada-target 0.01 and --ada-speed 40 raise p to 0.4 by step 3, which augments).
    A=(--ada --ada-geom --ada-speed 40 --ada-interval 1 --ada-target 0.01 --r1 0.5 --max-steps 3 --log-every 1)
    "$TRAIN" "${CPU[@]}" "${A[@]}" --out "$WORK/ac" >"$WORK/o" 2>&1 || fail "CPU --ada --r1 run failed: $(tail -3 "$WORK/o")"
    GANTRY_ALLOW_TF32=0 "$TRAIN" "${GPU[@]}" --device cuda "${A[@]}" --out "$WORK/ag" >"$WORK/o" 2>&1 \
      || fail "GPU --ada --r1 run failed: $(tail -3 "$WORK/o")"
    same_losses "$WORK/ac" "$WORK/ag" 3 >"$WORK/diff" || fail "GPU and CPU --ada --r1 losses differ: $(cat "$WORK/diff")"
    cmp -s <(cut -d, -f10 "$WORK/ac/metrics.csv") <(cut -d, -f10 "$WORK/ag/metrics.csv") || fail "GPU and CPU ADA p differ"
    "$GEN" --checkpoint "$WORK/pg" --device cuda --num 4 --grid "$WORK/g.png" >"$WORK/o" 2>&1 || fail "dcgan_generate --device cuda failed: $(tail -3 "$WORK/o")"
    [ -s "$WORK/g.png" ] || fail "dcgan_generate --device cuda wrote no grid"
    "$TRAIN" "${GPU[@]}" --device cuda --max-steps 2 --ema 0.9 --ada --ada-interval 1 --out "$WORK/pe" >"$WORK/o" 2>&1 \
      || fail "GPU run with --ema --ada failed: $(tail -3 "$WORK/o")"
    ;;
  host_waits)
    # A GPU training step waits for the device once (the one read-back of its losses), not once
    # per value: the CUDA emulator counts the host's waits for queued work (GANTRY_EMU_STATS),
    # and 4 more steps may add 4 of them, with and without --ema --ada.
    # It counts the device work queued too (kernels, library calls, copies, memsets): this tiny
    # model's step queues 131 operations, 134 with --ema --ada (2026-12-02; at ff3b1a5 it was 153
    # and 185, before BN's backward stopped zeroing a stand-in beta, the seeds' copies, the
    # per-step labels, mean's extra scale, cat's copy per input and EMA's two launches per
    # tensor went).
    # The budget below leaves a few operations of slack; a change that adds more per step
    # should say why in docs/cuda.md and raise it.
    GPU=("${TINY[@]:0:${#TINY[@]}-2}")
    for extra in "" "--ema 0.9 --ada --ada-interval 1"; do
      budget=135; [ -n "$extra" ] && budget=140
      for steps in 4 8; do
        # shellcheck disable=SC2086
        GANTRY_EMU_STATS=1 "$TRAIN" "${GPU[@]}" --device cuda --max-steps $steps $extra \
          --out "$WORK/hw$steps" >"$WORK/o$steps" 2>&1 || fail "GPU run failed: $(tail -3 "$WORK/o$steps")"
        rm -rf "$WORK/hw$steps"
      done
      w4=$(sed -n 's/^gantry-cuda-emu: host waits for queued work: \([0-9]*\).*/\1/p' "$WORK/o4")
      w8=$(sed -n 's/^gantry-cuda-emu: host waits for queued work: \([0-9]*\).*/\1/p' "$WORK/o8")
      if [ -z "$w4" ] || [ -z "$w8" ]; then echo "SKIPPED: not a CUDA emulator build"; exit 77; fi
      echo "host waits ${extra:-(plain)}: $w4 in 4 steps, $w8 in 8: $(( (w8 - w4) / 4 )) per step"
      [ $((w8 - w4)) -le 4 ] || fail "4 more steps ${extra:-(plain)} waited $((w8 - w4)) more times (at most 4): $(grep 'host waits' "$WORK/o8")"
      q4=$(sed -n 's/^gantry-cuda-emu: host waits.*device work: \([0-9]*\).*/\1/p' "$WORK/o4")
      q8=$(sed -n 's/^gantry-cuda-emu: host waits.*device work: \([0-9]*\).*/\1/p' "$WORK/o8")
      echo "device operations per step ${extra:-(plain)}: $(( (q8 - q4) / 4 )) (budget $budget)"
      [ $((q8 - q4)) -le $((4 * budget)) ] || fail "4 more steps ${extra:-(plain)} queued $((q8 - q4)) device operations (budget $((4 * budget))); GANTRY_EMU_TRACE=1 lists them"
    done
    ;;
  *) echo "unknown case $case"; failures=$((failures + 1)) ;;
  esac
done
echo "app tests: $failures failure(s)"
[ $failures = 0 ]
