#!/usr/bin/env bash
# One-shot check of everything the GPU path does, for a person with one NVIDIA GPU:
#
#     PYTHON=python3 bash benchmarks/gpu_check.sh      # an interpreter that has torch etc.
#     bash benchmarks/gpu_check.sh                      # the project's .venv
#
# Needs only the tracked files of the repository, no venv, no download: the CUDA-only tests,
# benchmarks/loader.py on CUDA (the cache of a synthetic tree of MURA-sized films it makes
# itself, on all cores), training throughput for ResNet18 at 256 and DenseNet-169 at 320,
# model-only versus fed by the pipeline, with torch.compile off and on
# (benchmarks/gpu_train.py), and a one-process torchrun run of `mura train`. About 5-8
# minutes on an H100-class card. The last line is one JSON summary; without a GPU the script
# says so in one line and that JSON is {"gpu": null}.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # mura_lib from this checkout, installed or not
export MURA_PROGRESS=log

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU is visible to $PYTHON; nothing to check"
    echo '{"gpu": null}'
    exit 0
fi

WORK=${GPU_CHECK_DIR:-benchmarks/data/gpu_check}
mkdir -p "$WORK"
started=$(date +%s)

echo "== CUDA-only tests" >&2
"$PYTHON" -m pytest -q -p no:cacheprovider tests/test_augment.py tests/test_batches.py \
    tests/test_checkpoint.py > "$WORK/tests.log" 2>&1
echo "tests_rc=$?" > "$WORK/tests.rc"
tail -n 3 "$WORK/tests.log" >&2

echo "== image pipeline on CUDA (benchmarks/loader.py)" >&2
"$PYTHON" benchmarks/loader.py --images 2000 --device cuda --json > "$WORK/loader.json" \
    2> "$WORK/loader.log" || echo '{"error": "loader.py failed, see loader.log"}' > "$WORK/loader.json"

echo "== training throughput (benchmarks/gpu_train.py)" >&2
: > "$WORK/train.jsonl"
for spec in "resnet18 256 64" "densenet169 320 32"; do
    set -- $spec
    for compile in "" "--compile"; do
        "$PYTHON" benchmarks/gpu_train.py --arch "$1" --size "$2" --batch-size "$3" $compile \
            --json >> "$WORK/train.jsonl" 2>> "$WORK/train.log" \
            || echo "{\"arch\": \"$1\", \"compile\": \"${compile:-off}\", \"error\": \"see train.log\"}" >> "$WORK/train.jsonl"
    done
done

echo "== torchrun --nproc_per_node=1 mura train (2 epochs on the bundled sample)" >&2
rm -rf "$WORK/torchrun"
tic=$(date +%s)
"$PYTHON" -m torch.distributed.run --nproc_per_node=1 -m mura_lib train --data data_sample \
    --out "$WORK/torchrun" --arch resnet18 --image-size 256 --epochs 2 --batch-size 64 \
    --device cuda --cache-dir "$WORK/cache" > "$WORK/torchrun.log" 2>&1
echo "torchrun_rc=$? torchrun_s=$(( $(date +%s) - tic ))" > "$WORK/torchrun.rc"

"$PYTHON" - "$WORK" "$started" <<'PY'
import json, pathlib, sys, time, torch
work, started = pathlib.Path(sys.argv[1]), float(sys.argv[2])
def kv(path):
    return dict(item.split("=") for item in path.read_text().split())
tests_log = (work / "tests.log").read_text().strip().splitlines()
summary = {
    "gpu": torch.cuda.get_device_name(0),
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "tests": {"rc": int(kv(work / "tests.rc")["tests_rc"]), "summary": tests_log[-1] if tests_log else ""},
    "loader": json.loads((work / "loader.json").read_text().strip().splitlines()[-1]),
    "training": [json.loads(line) for line in (work / "train.jsonl").read_text().splitlines() if line.strip()],
    "torchrun": {k: int(v) for k, v in kv(work / "torchrun.rc").items()},
    "seconds": round(time.time() - started),
}
print(json.dumps(summary))
PY
