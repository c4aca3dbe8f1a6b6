#!/usr/bin/env bash
# The GPU suite of issue 19 in one command, each stage time-boxed, everything written under $OUT.
#
#   bash bench/gpu_suite.sh --prepare                  # here, once: wheels + carried data, size check, device call
#   bash bench/gpu_suite.sh                            # on the GPU machine (OUT set by the device tool)
#   bash bench/gpu_suite.sh --device cpu --quick --out /tmp/gpu_dry   # the dry run that proves the script
#   bash bench/gpu_suite.sh --skip cuda_tests,train,train_throughput --baselines "breastmnist_resnet50:0 ..."
#                                                      # on the GPU machine, a call of its own: issue 17's seeds
#
# Stages: install (wheels + medzoo, versions) -> cuda_tests -> train (brain_tumor_resnet18 to completion)
# -> train_throughput, and with --baselines, the MedMNIST seeds of issue 17 (before the throughput bench, which
# then gets what they leave: run them as a call of their own, with the other stages skipped). The device machine gives one command at most 10 minutes and a session 15 in all, its
# start included, so the whole suite must end in under 9: every stage runs under `timeout` with a box of its
# own, and the last stage, the throughput bench (the one whose length is least known), gets what is left.
# Training runs before it for that reason: its box is fixed, and time it does not use goes to the bench.
#
# Options: --device cuda|cpu (default cuda)  --quick (1 epoch on a few images per class, short bench)
#          --out DIR (default $OUT)  --data DIR (default $GPU_SUITE_DATA, else the carried copy, else
#          ../shared/data/brain-tumor-mri)  --budget SECONDS (whole suite; default 520 on cuda)
#          --skip STAGE[,STAGE]  --prepare [--quality Q]
#          --baselines "RECIPE:SEED ..." (each a `medzoo train recipe=RECIPE seed=SEED` on the carried MedMNIST
#          files; records in $OUT/baselines.json, added here by `python bench/benchmarks.py --add-records FILE`)
# Environment: GPU_SUITE_THROUGHPUT_ARGS (more arguments for train_throughput.py, e.g. "--steps 10"),
#              GPU_SUITE_WHEELS, GPU_SUITE_SOURCE (original set for --prepare), PYTHON (the interpreter).
# $OUT ends up with at most 8 files (what the device tool brings back): summary.json, a log per stage,
# cuda_tests.xml, train_throughput.json and train_run.tar.gz (the training run dir without its weights); a
# --baselines call adds baselines.log and baselines.json (so it brings back 8 only with the other stages skipped).
set -uo pipefail  # no -e: a failing stage is recorded and the next one still runs

cd "$(dirname "$0")/.."
SUITE=build/gpu-suite           # ignored by git (/build/); carried to the device as one path
CARRIED_DATA=$SUITE/brain-tumor-mri
SHARED_DATA=../shared/data/brain-tumor-mri
MEDMNIST_FILES=(breastmnist.npz pneumoniamnist.npz adrenalmnist3d.npz)  # --prepare copies them to $SUITE/medmnist

device=cuda quick=0 prepare=0 quality=90 skip="" budget="" baselines="" out=${OUT:-}
data=${GPU_SUITE_DATA:-}
while (($#)); do
  case $1 in
    --device) device=$2; shift ;;
    --quick) quick=1 ;;
    --out) out=$2; shift ;;
    --data) data=$2; shift ;;
    --budget) budget=$2; shift ;;
    --skip) skip=$2; shift ;;
    --prepare) prepare=1 ;;
    --quality) quality=$2; shift ;;
    --baselines) baselines=$2; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "gpu_suite: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ $device == cuda || $device == cpu ]] || { echo "gpu_suite: --device must be cuda or cpu, not $device" >&2; exit 2; }

# The local venv where there is one (here); the image's python3 on the device, where .venv does not travel.
PY=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}

if ((prepare)); then
  # Here, before any device time is spent: the wheels the GPU image lacks, the data copy that fits the call,
  # and a check that the call will not be refused for its size.
  set -e
  ../shared/tools/device-wheels.sh "$PY"
  rm -rf "$SUITE/whl" && mkdir -p "$SUITE/whl"
  "$PY" - "$SUITE/whl" <<'EOF'
import shutil, sys
from pathlib import Path
sys.path.insert(0, "bench")
from gpu_suite import SKIP_WHEELS
for wheel in sorted(Path(".whl").glob("*.whl")):
    name = wheel.name.split("-")[0].lower().replace("_", "-")
    if name not in SKIP_WHEELS:
        shutil.copy2(wheel, sys.argv[1])
EOF
  mkdir -p "$SUITE/medmnist"
  for file in "${MEDMNIST_FILES[@]}"; do cp ../shared/data/medmnist/"$file" "$SUITE/medmnist/"; done
  "$PY" bench/gpu_suite.py prepare-data --src "${GPU_SUITE_SOURCE:-$SHARED_DATA}" --dst "$CARRIED_DATA" \
    --quality "$quality"
  set +e
  "$PY" bench/gpu_suite.py travel-size --carry "$SUITE"; fits=$?
  echo "Issue 17's MedMNIST seeds carry only the wheels and the MedMNIST files:"
  "$PY" bench/gpu_suite.py travel-size --carry "$SUITE/whl" "$SUITE/medmnist" || fits=1
  # Cheapest first, so that a call cut off by its box still brings back whole rows.
  jobs=$(printf '%s ' {breastmnist_resnet50,pneumoniamnist_resnet18,pneumoniamnist_resnet50}:{0,1,2})
  cat <<EOF

Device call (one try: a machine start plus this suite uses most of the 15 minutes):
  run(command="bash bench/gpu_suite.sh", carry=["$SUITE"], timeout_s=590, kind="nvidia-h200")
Issue 17's MedMNIST seeds, as a call of their own (records come back in baselines.json: add them here with
python bench/benchmarks.py --add-records FILES_AT/baselines.json):
  run(command="bash bench/gpu_suite.sh --skip cuda_tests,train,train_throughput --baselines '${jobs% }'",
      carry=["$SUITE/whl", "$SUITE/medmnist"], timeout_s=590)
EOF
  exit $fits
fi

[[ -n $out ]] || { echo "gpu_suite: no output folder: set OUT or pass --out DIR" >&2; exit 2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [[ -z $data ]]; then
  data=$CARRIED_DATA
  [[ -d $data/Training ]] || data=$SHARED_DATA
fi
[[ -d $data ]] && data=$(cd "$data" && pwd)
WORK=$(mktemp -d /tmp/gpu_suite.XXXXXX)
SITE=$WORK/site  # wheels + medzoo go here when the python lacks them; harmless on PYTHONPATH when empty
mkdir -p "$SITE"
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 MEDZOO_OFFLINE=1       # logs as they happen; no machine there reaches the network
export MEDZOO_HOME=$WORK/medzoo-home             # an empty cache: decode and audit are part of "to completion"
# The baselines read $MEDZOO_DATA/medmnist/NAME.npz: the carried copy, else the shared data beside the checkout.
if [[ -d $SUITE/medmnist ]]; then
  MEDZOO_DATA=$(cd "$SUITE" && pwd)
else
  MEDZOO_DATA=${MEDZOO_DATA:-$(cd .. && pwd)/shared/data}
fi
export MEDZOO_DATA
[[ -f $data.json ]] && cp "$data.json" "$WORK/data.json"  # how the carried copy was made, for the summary

# Boxes in seconds: cap per stage; the throughput bench is last and takes whatever the total leaves.
if [[ $device == cuda ]]; then
  budget=${budget:-520} cap_install=120 cap_cuda_tests=90 cap_train=180
else  # the CPU dry run has no 9-minute limit, only a 2-core machine
  budget=${budget:-3600} cap_install=300 cap_cuda_tests=300 cap_train=1500
fi
deadline=$(($(date +%s) + budget))
quick_flag=()
((quick)) && quick_flag=(--quick)
reserve_summary=10

echo "gpu_suite: device $device, quick $quick, python $PY, data $data, work $WORK, out $out, budget ${budget}s"

# run_stage NAME BOX COMMAND...: runs COMMAND under `timeout` (which signals its whole process group, loader
# workers included), logs to $WORK/NAME.log and the console, records rc and seconds, refreshes the summary.
run_stage() {
  local name=$1 box=$2; shift 2
  local left=$((deadline - $(date +%s) - reserve_summary))
  if [[ ,$skip, == *,$name,* ]]; then
    echo "== $name: skipped (--skip)"
    return
  fi
  ((box > left)) && box=$left
  if ((box < 10)); then
    echo "== $name: not run, ${left}s left of the budget" | tee "$WORK/$name.log"
    printf '%s\t%s\t%s\t%s\n' "$name" -1 0 0 >>"$WORK/stages.tsv"
  else
    echo "== $name (box ${box}s): $*"
    local start=$EPOCHREALTIME rc
    timeout --kill-after=15 "$box" "$@" 2>&1 | tee "$WORK/$name.log"
    rc=${PIPESTATUS[0]}
    local seconds
    seconds=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    ((rc == 124 || rc == 137)) && echo "== $name: cut off by its ${box}s box" | tee -a "$WORK/$name.log"
    echo "== $name: rc $rc in ${seconds}s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$seconds" "$box" >>"$WORK/stages.tsv"
  fi
  summarize
}

summarize() {
  "$PY" bench/gpu_suite.py summarize --work "$WORK" --out "$out" --device "$device" "${quick_flag[@]}" \
    || echo "gpu_suite: summary failed (the stage logs are in $WORK)" >&2
}

# 1. Wheels + medzoo into $SITE (a no-op where they import already, as in the local venv), and versions.
run_stage install "$cap_install" "$PY" bench/gpu_suite.py install --wheels "${GPU_SUITE_WHEELS:-$SUITE/whl}" \
  --site "$SITE" --versions "$WORK/versions.json"

# 2. The tests that skip without CUDA: the files with such a skip mark, their CUDA cases (ids say cuda or gpu).
# In one process (-n 0): each pytest-xdist worker of addopts would start a CUDA context of its own.
mapfile -t cuda_files < <(grep -lE "skip.*cuda\.is_available|cuda\.is_available.*skip" tests/*.py)
((${#cuda_files[@]})) || cuda_files=(tests)  # none marked that way any more: let -k pick from the whole suite
run_stage cuda_tests "$cap_cuda_tests" "$PY" -m pytest "${cuda_files[@]}" -k "cuda or gpu" -p no:cacheprovider -n 0 \
  -q -rs --junitxml="$WORK/cuda_tests.xml"

# 3. The 224 px recipe to completion (decode, audit, every epoch, test evaluation). --quick: one epoch on a few
# images per class; the trainer has no batch limit, so the data is cut instead.
# A copy made by --prepare holds the recipe's `pre` steps applied already (see prepare_data in gpu_suite.py).
train_args=(recipe=brain_tumor_resnet18 "hydra.run.dir=$WORK/brain_tumor_resnet18" "trainer.device=$device"
            trainer.progress=false)
[[ -f $data.json ]] && train_args+=('transforms.pre=[]')
train_data=$data
if ((quick)) && [[ -d $data/Training && ,$skip, != *,train,* ]]; then
  train_data=$WORK/quick-data
  "$PY" bench/gpu_suite.py subset --src "$data" --dst "$train_data" --train 16 --test 8
  train_args+=(trainer.max_epochs=1)
fi
run_stage train "$cap_train" "$PY" -m medzoo.cli train "${train_args[@]}" "data.root=$train_data"

# 4. Issue 17's MedMNIST seeds (only with --baselines): one training run per RECIPE:SEED, in the order given, so
# put first what matters most; a record is kept as each run finishes, so a cut-off stage loses only its last run.
if [[ -n $baselines ]]; then
  read -ra baseline_jobs <<<"$baselines"
  run_stage baselines "$((deadline - $(date +%s)))" "$PY" bench/gpu_suite.py baselines --jobs "${baseline_jobs[@]}" \
    --work "$WORK" --device "$device" "${quick_flag[@]}"
fi

# 5. Throughput: engine vs plain loop, eager / channels_last / compiled, data wait, peak memory. Prints a row per
# variant as it goes, so a cut-off run still leaves its rows (the summary reads them from the log).
run_stage train_throughput "$((deadline - $(date +%s)))" "$PY" bench/train_throughput.py --device "$device" \
  "${quick_flag[@]}" --json "$WORK/train_throughput.json" ${GPU_SUITE_THROUGHPUT_ARGS:-}

echo "gpu_suite: done; everything in $WORK, the files to keep in $out"
"$PY" bench/gpu_suite.py summarize --work "$WORK" --out "$out" --device "$device" "${quick_flag[@]}" --print
