#!/usr/bin/env bash
# Bounded libFuzzer runs of the decoders: every tests/fuzz/fuzz_NAME.c is built with
# clang -fsanitize=fuzzer,address,undefined against all of common/ and proto/, seeded
# (build/fuzz/corpus/NAME, plus tests/fuzz/corpus_NAME/ when it exists) and run for
# FUZZ_SECONDS (default 30) each. Crashing inputs
# land in build/fuzz/artifacts/. Last line: "fuzz: N passed, N failed" (one per target);
# the exit status is non-zero when any target crashed or did not build.
# A target that needs code outside common/ and proto/ names it in one comment line,
#   /* fuzz-sources: router/http_stop.c tests/fuzz/vocab.c */
# and those files are built with the same flags (their folders on the include path)
# and linked into that target only. FUZZ_OUT (default build/fuzz) moves everything
# built and run, so that two runs at once share nothing.
set -u
cd "$(dirname "$0")/../.."
seconds=${FUZZ_SECONDS:-30}
max_len=${FUZZ_MAX_LEN:-65536} # bytes per input: small inputs keep thousands of runs a second
shared=${LLORCH_SHARED:-../shared}
out=${FUZZ_OUT:-build/fuzz}
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

# ---- a target's own sources (fuzz-sources) -------------------------------------------
# The files named on the target's fuzz-sources line, space-separated.
extra_sources() {
    sed -n 's|^/\* *fuzz-sources: *\(.*[^ ]\) *\*/ *$|\1|p' "$1" | head -1
}

# Builds the given sources (stale ones only) and sets extra to "-Idir" for each of
# their folders, then their objects: what the target's compile line adds.
build_extra() {
    extra=()
    local src obj dir objs=()
    for src in "$@"; do
        [ -r "$src" ] || { echo "fuzz: $src (named by fuzz-sources) does not exist"; return 1; }
        dir=-I$(dirname "$src")
        [[ " ${extra[*]} " == *" $dir "* ]] || extra+=("$dir")
    done
    for src in "$@"; do
        obj=$out/obj/${src//\//_}
        obj=${obj%.c}.o
        if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ] ||
            [ -n "$(find common proto client router tests/fuzz -name '*.h' -newer "$obj" 2>/dev/null | head -1)" ]; then
            "$CC" "${cflags[@]}" "${extra[@]}" -fsanitize=fuzzer-no-link -c "$src" -o "$obj" || return 1
        fi
        objs+=("$obj")
    done
    extra+=("${objs[@]}")
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

# fuzz_http: byte 0 picks the kind (bit 0: chat) and the limits; the rest is the body.
# Bodies are tests/fuzz/seeds/{completions,chat}.jsonl, one a line, each under both kinds'
# usual limits, and once with the kind swapped.
seed_http() {
    local dir=$1 kind file line i=0
    for kind in completions chat; do
        file=tests/fuzz/seeds/$kind.jsonl
        while IFS= read -r line; do
            i=$((i + 1))
            if [ $kind = chat ]; then
                { printf '\023'; printf '%s' "$line"; } >"$dir/chat-$i"
                { printf '\000'; printf '%s' "$line"; } >"$dir/swapped-$i"
            else
                { printf '\062'; printf '%s' "$line"; } >"$dir/completions-$i"
                { printf '\031'; printf '%s' "$line"; } >"$dir/swapped-$i"
            fi
        done <"$file"
    done
}

# fuzz_tokenizer: byte 0 picks the vocabulary, the mode and the flags. Texts are the
# lines of tests/fuzz/seeds/text.txt (printf %b escapes: control and ill-formed bytes),
# encoded plainly, with specials, and with the shared vocabulary; ids are a few short
# sequences, one with out-of-range ids.
seed_tokenizer() {
    local dir=$1 line i=0
    while IFS= read -r line; do
        i=$((i + 1))
        { printf '\000'; printf '%b' "$line"; } >"$dir/text-$i"
        { printf '\074'; printf '%b' "$line"; } >"$dir/special-$i"
        { printf '\001'; printf '%b' "$line"; } >"$dir/shared-$i"
    done <tests/fuzz/seeds/text.txt
    # ids: <s> (1), byte tokens <0xF0> <0x9F> <0xA6> <0x99> (a llama, split), "a", </s>
    printf '\002\001\000\000\363\000\000\242\000\000\251\000\000\234\000\000\141\001\000\002\000\000' >"$dir/ids-1"
    printf '\022\001\000\000\000\000\377\001\000\377\375\377\377\003\200\377' >"$dir/ids-bad"
    printf '\043\001\000\000\363\000\000\242\000\000\100\000\000' >"$dir/ids-shared"
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
    read -ra sources <<<"$(extra_sources "$src")"
    # shellcheck disable=SC2086
    if ! build_extra "${sources[@]}" ||
        ! "$CC" "${cflags[@]}" -fsanitize=fuzzer "$src" "${extra[@]}" "$out/libcore.a" $libs -o "$bin"; then
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
