#!/usr/bin/env bash
# Builds build/ref/llama-dump: tests/reference/llama_dump.c against the llama.cpp
# shared libraries that node-llama-cpp ships, with headers read at build time from
# the source bundle that ships beside them (never copied into the repository).
# Usage: tests/reference/build_dump.sh [--force]. Prints the binary's path.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
nm="$root/tests/reference/node_modules"
bundle="$nm/node-llama-cpp/llama/gitRelease.bundle"
libdir="$nm/@node-llama-cpp/linux-x64/bins/linux-x64"
out="$root/build/ref"
src="$out/llama.cpp-src"        # a clone of the bundle, kept between builds
inc="$out/include"
bin="$out/llama-dump"
force=${1:-}

for f in "$bundle" "$libdir/libllama.v0.4.0.so" "$libdir/libggml.v0.4.0.so" "$libdir/libggml-base.so"; do
    if [ ! -e "$f" ]; then
        echo "build_dump: missing $f (run scripts/deps.sh to install node-llama-cpp 3.21.1)" >&2
        exit 1
    fi
done

mkdir -p "$out"
# The bundle holds one squashed commit of llama.cpp v0.4.0 as HEAD (no tags).
if [ ! -d "$src/.git" ]; then
    rm -rf "$src.tmp"
    git clone --quiet --no-checkout "$bundle" "$src.tmp"
    mv "$src.tmp" "$src"
fi
rev=$(git -C "$src" rev-parse HEAD)

# Headers: include/llama.h and ggml/include/*.h of that commit.
if [ ! -f "$inc/.rev" ] || [ "$(cat "$inc/.rev")" != "$rev" ]; then
    rm -rf "$inc"
    mkdir -p "$inc"
    git -C "$src" show "HEAD:include/llama.h" >"$inc/llama.h"
    for h in $(git -C "$src" ls-tree --name-only HEAD ggml/include/ | grep '\.h$'); do
        git -C "$src" show "HEAD:$h" >"$inc/$(basename "$h")"
    done
    echo "$rev" >"$inc/.rev"
fi

cc_bin=${CC:-cc}
srcfile="$root/tests/reference/llama_dump.c"
if [ "$force" = "--force" ] || [ ! -x "$bin" ] || [ "$srcfile" -nt "$bin" ] || [ "$0" -nt "$bin" ]; then
    # The ggml libraries have no plain "libggml.so" name, so they are linked by path;
    # the rpath lets the binary find them (and the CPU variants it loads) at run time.
    "$cc_bin" -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter \
        -I"$inc" -DLLAMA_DUMP_LIB_DIR="\"$libdir\"" \
        -o "$bin.tmp" "$srcfile" \
        "$libdir/libllama.v0.4.0.so" "$libdir/libggml.v0.4.0.so" "$libdir/libggml-base.so" \
        -Wl,-rpath,"$libdir" -lm
    mv "$bin.tmp" "$bin"
fi
echo "$bin"
