#!/usr/bin/env bash
# `make run`: installs what is missing, builds, makes the default model if it is not
# there yet, runs the main job through llorch's pipeline, then serves the model over
# HTTP and prints a curl command that works against it.
#   MODEL=path.gguf   your own model instead of the default one
#   PROMPT=...        the prompt of the first job
#   PORT=8080         the HTTP port
#   SERVE=0           stop after the first job (no HTTP server)
# On a terminal the server stays up until Ctrl-C; without one (scripts, CI) the script
# runs the curl command itself and stops the server.
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

[ "${SERVE:-1}" = 0 ] && exit 0

port=${PORT:-8080}
name=$(basename "$model" .gguf)
echo "run: llorch up -m $model --workers 2 --http 127.0.0.1:$port"
build/bin/llorch up -m "$model" --workers 2 --http "127.0.0.1:$port" --http-model-name "$name" \
    >/dev/null &
up=$!
trap 'kill -TERM $up 2>/dev/null; wait $up 2>/dev/null' EXIT
trap 'exit 0' INT TERM

for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    kill -0 $up 2>/dev/null || { echo "run: llorch up stopped early (is port $port free? PORT=... chooses another)"; exit 1; }
    sleep 0.1
done

body="{\"model\": \"$name\", \"prompt\": \"$prompt\", \"max_tokens\": 32}"
cmd="curl -s http://127.0.0.1:$port/v1/completions -H 'Content-Type: application/json' -d '$body'"
if [ -t 0 ]; then
    echo
    echo "llorch is serving $model on http://127.0.0.1:$port (OpenAI API; Ctrl-C stops it). Try:"
    echo
    echo "  $cmd"
    echo
    wait $up
else
    echo "run: $cmd"
    curl -sf "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' -d "$body"
    echo
    echo "run: the HTTP API answered; stopping (run 'make run' on a terminal to keep it serving)"
fi
