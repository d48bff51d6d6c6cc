#!/usr/bin/env bash
# Bounded libFuzzer runs of the decoders: every tests/fuzz/fuzz_NAME.c is built with
# clang -fsanitize=fuzzer,address,undefined against all of common/ and proto/, seeded
# (build/fuzz/corpus/NAME, plus tests/fuzz/corpus_NAME/ when it exists) and run for
# FUZZ_SECONDS (default 30) each. Crashing inputs
# land in build/fuzz/artifacts/. Last line: "fuzz: N passed, N failed" (one per target);
# the exit status is non-zero when any target crashed or did not build.
set -u
cd "$(dirname "$0")/../.."
seconds=${FUZZ_SECONDS:-30}
max_len=${FUZZ_MAX_LEN:-65536} # bytes per input: small inputs keep thousands of runs a second
shared=${LLORCH_SHARED:-../shared}
out=build/fuzz
CC=${FUZZ_CC:-clang}
mkdir -p "$out/obj" "$out/artifacts" "$out/corpus"

if ! command -v "$CC" >/dev/null; then
    echo "fuzz: $CC not found (make deps installs clang and libclang-rt-14-dev)"
    echo "fuzz: 0 passed, 1 failed"
    exit 1
fi

cflags=(-std=c11 -D_GNU_SOURCE -g -O1 -pthread -fno-omit-frame-pointer
        -fsanitize=address,undefined -fno-sanitize-recover=undefined -Icommon -Iproto -Iclient)
# The link libraries are the Makefile's, so that proto/ code linking more just works.
libs=$(make -pnq -f Makefile fuzz-print-database 2>/dev/null | sed -n 's/^LDLIBS_ALL :\{0,1\}= //p' | tail -1)
libs=${libs:--ljansson -lm -lpthread}

# ---- the library, instrumented for coverage (fuzzer-no-link) ----------------------
build_core() {
    local objs=() src obj isa
    for src in common/*.c proto/*.c; do
        [ -e "$src" ] || continue # proto/ may be empty
        obj=$out/obj/${src//\//_}
        obj=${obj%.c}.o
        case "$(basename "$src" .c)" in
            kernels_avx2) isa="-mavx2 -mfma -mf16c" ;;
            kernels_avx512) isa="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma -mf16c" ;;
            *) isa="" ;;
        esac
        if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find common proto -name '*.h' -newer "$obj" 2>/dev/null | head -1)" ]; then
            # shellcheck disable=SC2086
            "$CC" "${cflags[@]}" -fsanitize=fuzzer-no-link $isa -c "$src" -o "$obj" || return 1
        fi
        objs+=("$obj")
    done
    rm -f "$out/libcore.a"
    ar rcs "$out/libcore.a" "${objs[@]}"
}

# ---- seeds --------------------------------------------------------------------------
# Little-endian fields for hand-made seed files.
le32() { printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)))"; }
le64() { le32 $(($1 & 0xffffffff)); le32 $((($1 >> 32) & 0xffffffff)); }
gstr64() { le64 ${#1}; printf '%s' "$1"; }
gstr32() { le32 ${#1}; printf '%s' "$1"; }
zeros() { head -c "$1" /dev/zero; }

seed_gguf() {
    local dir=$1 f
    for f in models/stories260K.gguf models/tinyllamas-stories-260k-f32.gguf vocab/ggml-vocab-llama-spm.gguf; do
        # Inputs are capped at max_len bytes: the first 64 KiB hold all of stories260K's
        # metadata and tensor infos and the start of the vocabulary's token array.
        if [ -r "$shared/$f" ]; then
            head -c "$max_len" "$shared/$f" >"$dir/head-$(basename "$f")"
        fi
    done
    # v3: a string, a u32, an array of strings, a nested array, one F32 tensor [8].
    {
        printf 'GGUF'; le32 3; le64 1; le64 4
        gstr64 general.architecture; le32 8; gstr64 llama
        gstr64 llama.block_count; le32 4; le32 1
        gstr64 tokenizer.ggml.tokens; le32 9; le32 8; le64 2; gstr64 a; gstr64 b
        gstr64 nested; le32 9; le32 9; le64 1; le32 0; le64 2; printf '\001\002'
        gstr64 w; le32 1; le64 8; le32 0; le64 0
    } >"$dir/tiny-v3.gguf"
    local len; len=$(stat -c %s "$dir/tiny-v3.gguf")
    zeros $(((32 - len % 32) % 32 + 32)) >>"$dir/tiny-v3.gguf"
    # v1: 32-bit counts; one Q8_0 tensor [32] (34 bytes) and a F16 [4], alignment 64.
    {
        printf 'GGUF'; le32 1; le32 2; le32 2
        gstr32 general.alignment; le32 4; le32 64
        gstr32 tokenizer.ggml.bos_token_id; le32 4; le32 0
        gstr32 q; le32 1; le32 32; le32 8; le64 0
        gstr32 h; le32 1; le32 4; le32 1; le64 64
    } >"$dir/tiny-v1.gguf"
    len=$(stat -c %s "$dir/tiny-v1.gguf")
    zeros $(((64 - len % 64) % 64 + 72)) >>"$dir/tiny-v1.gguf"
    # v2 with BF16 [2,2] and every scalar kind.
    {
        printf 'GGUF'; le32 2; le64 1; le64 6
        gstr64 u8; le32 0; printf '\007'
        gstr64 i16; le32 3; printf '\377\377'
        gstr64 f32; le32 6; le32 0x3f800000
        gstr64 b; le32 7; printf '\001'
        gstr64 i64; le32 11; le64 5
        gstr64 f64; le32 12; le64 0
        gstr64 bf; le32 2; le64 2; le64 2; le32 30; le64 0
    } >"$dir/tiny-v2.gguf"
    len=$(stat -c %s "$dir/tiny-v2.gguf")
    zeros $(((32 - len % 32) % 32 + 8)) >>"$dir/tiny-v2.gguf"
}

# ---- build and run every target ------------------------------------------------------
passed=0; failed=0
if ! build_core; then
    echo "fuzz: cannot build common/ and proto/ for fuzzing"
    echo "fuzz: 0 passed, 1 failed"
    exit 1
fi
for src in tests/fuzz/fuzz_*.c; do
    [ -e "$src" ] || continue
    name=$(basename "$src" .c)
    short=${name#fuzz_}
    bin=$out/$name
    # shellcheck disable=SC2086
    if ! "$CC" "${cflags[@]}" -fsanitize=fuzzer "$src" "$out/libcore.a" $libs -o "$bin"; then
        echo "FAIL $name (does not build)"
        failed=$((failed + 1))
        continue
    fi
    corpus=$out/corpus/$short
    mkdir -p "$corpus"
    if declare -F "seed_$short" >/dev/null; then
        "seed_$short" "$corpus"
    fi
    if [ -d "tests/fuzz/corpus_$short" ]; then
        cp -r "tests/fuzz/corpus_$short/." "$corpus/"
    fi
    log=$out/$name.log
    if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" -print_final_stats=1 \
        -artifact_prefix="$out/artifacts/$name-" "$corpus" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "ok   $name (${seconds}s, ${runs:-?} runs, corpus $(find "$corpus" -type f | wc -l) files)"
        passed=$((passed + 1))
    else
        echo "FAIL $name (crash; reproduce with: $bin $out/artifacts/$name-*)"
        grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -10
        tail -30 "$log"
        failed=$((failed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ $failed -eq 0 ]
