/* cmd_generate.c - `llorch generate`: text from a prompt, streamed or as JSON. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "generate_options.h"
#include "generate_output.h"
#include "proc.h"
#include "generate.h"

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: llorch generate -m MODEL -p PROMPT [-n N] [options]\n"
            "\n"
            "Generates text from PROMPT with the GGUF model MODEL, in this process.\n"
            "\n"
            "  -m, --model PATH        GGUF model file\n"
            "  -p, --prompt TEXT       prompt (BOS is added when the vocabulary says so)\n"
            "  -n, --n-predict N       tokens to generate at most (default 128)\n"
            "      --temp T            temperature; 0 = greedy (default 0.8)\n"
            "      --top-k K           keep the K most likely tokens; 0 = off (default 40)\n"
            "      --top-p P           nucleus sampling mass; 1 = off (default 0.95)\n"
            "      --min-p P           drop tokens below P x the top probability (default 0.05)\n"
            "      --repeat-penalty R  penalty for the last 64 tokens; 1 = off (default 1)\n"
            "      --seed S            seed of the sampler; -1 = random (default -1)\n"
            "      --threads T         threads (default: the CPUs online)\n"
            "      --kv-type f32|f16   how the KV cache stores keys and values (default f32;\n"
            "                          f16 takes half the memory, as llama.cpp's default)\n"
            "      --top K             report the K most probable tokens of every step (JSON)\n"
            "      --json              print one JSON object instead of streaming the text:\n"
            "                          prompt_tokens, tokens, text, stop_reason, timings\n"
            "                          {prompt_tokens_per_s, gen_tokens_per_s, load_ms}, top\n"
            "      --in-process        run the model in this process (the default)\n"
            "      --mmap              read the weights from the mapped file instead of copying\n"
            "                          them onto 2 MiB pages first: starts faster, generates\n"
            "                          slower\n"
            "      --ignore-eos        do not stop at the end-of-sequence token: always make\n"
            "                          N tokens (benchmarks)\n"
            "  -h, --help              this help\n"
            "\n"
            "Through a pipeline instead: --router EP (a running router), or --workers K\n"
            "[--split F:L,...] (one started for this call); `llorch generate --help --router` shows those options.\n"
            "\n"
            "Environment: LLORCH_ISA=scalar|avx2|avx512 chooses the kernel variant.\n");
}

/* Models at least this large say so while their weights are copied (seconds). */
#define PLACE_NOTICE_BYTES ((uint64_t)512 << 20)

/* Copies the weights onto huge pages (model_place_weights), saying so on stderr for a
 * large model, whose copy takes seconds; when the memory cannot be had the weights stay
 * in the mapped file, with a warning. The time counts as load time. */
static void s_place_weights(generator *g)
{
    uint64_t bytes = 0;
    for (size_t i = 0; i < g->m->n_tensors; i++)
        bytes += g->m->tensors[i].n_bytes;
    const bool notice = bytes >= PLACE_NOTICE_BYTES;
    if (notice)
        fprintf(stderr, "llorch: copying %.1f GB of weights onto 2 MiB pages (--mmap skips "
                        "this)...\n", bytes / 1e9);
    const int64_t t0 = proc_now_ms();
    llorch_error err = {0};
    if (model_place_weights(g->m, &err) < 0)
        fprintf(stderr, "llorch: warning: the weights stay in the mapped file: %s\n", err.msg);
    else if (notice)
        fprintf(stderr, "llorch: weights copied in %.1f s\n", (proc_now_ms() - t0) / 1000.0);
    g->load_ms += (double)(proc_now_ms() - t0);
}

static int s_stream_text(void *user, const char *text, size_t len)
{
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

int cmd_generate(int argc, char **argv)
{
    if (generate_remote_wanted(argc, argv))
        return cmd_generate_remote(argc, argv);
    const char *model_path = NULL, *prompt = NULL;
    bool json = false, use_mmap = false;
    long n_predict = 128, top = 0, threads = sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = 1;
    generate_params p = {.sampling = sampler_params_default()};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            s_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
            continue;
        } else if (!strcmp(a, "--in-process")) {
            continue;
        } else if (!strcmp(a, "--mmap")) {
            use_mmap = true;
            continue;
        } else if (!strcmp(a, "--ignore-eos")) {
            p.ignore_eos = true;
            continue;
        }
        if (!v || a[0] != '-') {
            fprintf(stderr, "llorch generate: %s %s\n\n", a,
                    a[0] == '-' ? "needs a value" : "is not an option");
            s_usage(stderr);
            return 2;
        }
        const int sampling = generate_opt_sampling(a, v, &p.sampling);
        if (sampling != 0) {
            if (sampling < 0)
                return 2;
            i++;
            continue;
        }
        int bad = 0;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            model_path = v;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            prompt = v;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            bad = generate_opt_long(a, v, 0, 1 << 24, &n_predict);
        } else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) {
            bad = generate_opt_long(a, v, 1, 256, &threads);
        } else if (!strcmp(a, "--top")) {
            bad = generate_opt_long(a, v, 0, 1000, &top);
        } else if (!strcmp(a, "--kv-type")) {
            bad = generate_opt_kv_type(a, v, &p.kv_type);
        } else {
            fprintf(stderr, "llorch generate: unknown option %s\n\n", a);
            s_usage(stderr);
            return 2;
        }
        if (bad)
            return 2;
        i++;
    }
    if (!model_path || !prompt) {
        fprintf(stderr, "llorch generate: -m MODEL and -p PROMPT are required\n\n");
        s_usage(stderr);
        return 2;
    }
    llorch_error err = {0};
    if (sampler_params_validate(&p.sampling, &err) < 0) {
        fprintf(stderr, "llorch generate: %s\n", err.msg);
        return 2;
    }
    p.prompt = prompt;
    p.n_predict = (int)n_predict;
    p.threads = (int)threads;
    p.top_k_probs = (int)top;

    generator *g = generator_open(model_path, &err);
    if (!g) {
        fprintf(stderr, "llorch generate: %s\n", err.msg);
        return 1;
    }
    if (!use_mmap)
        s_place_weights(g);
    generate_result r;
    int rc = generate_run(g, &p, json ? NULL : s_stream_text, NULL, &r, &err);
    if (rc < 0) {
        fprintf(stderr, "llorch generate: %s\n", err.msg);
    } else {
        const generate_output o = {
            .prompt_tokens = r.prompt_tokens, .n_prompt = r.n_prompt, .tokens = r.tokens,
            .n_tokens = r.n_tokens, .text = r.text, .text_len = r.text_len,
            .stop_reason = r.stop_reason, .prompt_tokens_per_s = r.prompt_tokens_per_s,
            .gen_tokens_per_s = r.gen_tokens_per_s, .load_ms = r.load_ms, .top = r.top,
            .top_k = r.top_k};
        if (json)
            rc = generate_output_json(&o);
        else
            generate_output_summary(&o);
    }
    generate_result_free(&r);
    generator_free(&g);
    return rc == 0 ? 0 : 1;
}
