#!/usr/bin/env bash
# Go on with the open runs handed on in checkpoints/partial/ (issue 16), one CPU thread
# each, in the background: a fresh machine keeps no process between sessions, so a
# session starts these first.
#
#   bash scripts/resume_open_runs.sh [NAME ...]    # default: every folder there
#   bash scripts/resume_open_runs.sh --hand-on     # copy the runs' partials back there
#
# Each folder checkpoints/partial/NAME/ holds NAME.partial.safetensors and a README with
# the run's command. Starting copies that file to runs/ unless runs/ already holds one
# with at least as many epochs, then runs
#   OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 nice -n 5 python -m latentviz resume \
#       runs/NAME.partial.safetensors --data-dir $DATA --no-classifiers >> runs/NAME.log
# ($DATA defaults to .data, a copy of ../shared/data). A run already going is left alone.
# --hand-on copies each open run's newest partial (and, once growth ended, its
# .grown.partial file) back into its folder, to be committed (`git add -f`: the names are
# git-ignored elsewhere).
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DATA=${DATA:-.data}
mkdir -p runs

epochs() {  # the epochs a checkpoint's header records, 0 if it cannot be read
    PYTHONPATH=. "$PY" -c "import sys; from latentviz.checkpoints import read_meta
try: print(read_meta(sys.argv[1]).epochs or 0)
except Exception: print(0)" "$1"
}

if [ "${1:-}" = "--hand-on" ]; then
    for dir in checkpoints/partial/*/; do
        name=$(basename "$dir")
        for f in "runs/$name.partial.safetensors" "runs/$name.grown.partial.safetensors"; do
            [ -f "$f" ] && cp "$f" "$dir" && echo "$dir <- $f ($(epochs "$f") epochs)"
        done
    done
    exit 0
fi

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    for dir in checkpoints/partial/*/; do names+=("$(basename "$dir")"); done
fi
for name in "${names[@]}"; do
    src="checkpoints/partial/$name/$name.partial.safetensors"
    dst="runs/$name.partial.safetensors"
    if [ ! -f "$src" ]; then echo "$name: no $src" >&2; continue; fi
    if pgrep -f "latentviz resume $dst" >/dev/null; then echo "$name: already running"; continue; fi
    if [ ! -f "$dst" ] || [ "$(epochs "$dst")" -lt "$(epochs "$src")" ]; then
        cp "$src" "$dst"
    fi
    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 nohup nice -n 5 "$PY" -m latentviz resume \
        "$dst" --data-dir "$DATA" --no-classifiers >> "runs/$name.log" 2>&1 &
    echo "$name: resumed from epoch $(epochs "$dst") (log runs/$name.log)"
done
