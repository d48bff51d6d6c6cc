#!/usr/bin/env bash
# `make run`: installs what is missing, builds, makes the default model if it is not
# there yet, and runs the main job on it. MODEL=path.gguf runs your own model instead.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh --check
make --no-print-directory -j2 all >/dev/null

model=${MODEL:-build/models/llorch-tiny.gguf}
if [ ! -f "$model" ]; then
    echo "run: making the default model $model (random weights, small built-in vocabulary)"
    mkdir -p "$(dirname "$model")"
    build/bin/llorch mkmodel --preset tiny --out "$model"
fi

prompt=${PROMPT:-Once upon a time}
# The main job through the real pipeline: a loader, two workers (half the layers each)
# and a router as processes, started for this call and stopped after it.
echo "run: llorch generate -m $model --workers 2 -p \"$prompt\" -n 48"
build/bin/llorch generate -m "$model" --workers 2 -p "$prompt" -n 48
echo
