/* generate_options.c - the options `llorch generate` reads alike in-process and through a pipeline. */
#include "generate_options.h"

#include <stdio.h>
#include <string.h>

#include "proc.h"

int generate_opt_long(const char *opt, const char *v, long min, long max, long *out)
{
    llorch_error err = {0};
    if (proc_parse_long(opt, v, min, max, out, &err) == 0)
        return 0;
    fprintf(stderr, "llorch generate: %s\n", err.msg);
    return -1;
}

int generate_opt_float(const char *opt, const char *v, float *out)
{
    llorch_error err = {0};
    if (proc_parse_float(opt, v, out, &err) == 0)
        return 0;
    fprintf(stderr, "llorch generate: %s\n", err.msg);
    return -1;
}

int generate_opt_kv_type(const char *opt, const char *v, kv_type *out)
{
    llorch_error err = {0};
    if (kv_type_parse(v, out, &err) == 0)
        return 0;
    fprintf(stderr, "llorch generate: %s: %s\n", opt, err.msg);
    return -1;
}

int generate_opt_sampling(const char *opt, const char *v, sampler_params *sp)
{
    long n;
    int bad;
    if (!strcmp(opt, "--temp")) {
        bad = generate_opt_float(opt, v, &sp->temperature);
    } else if (!strcmp(opt, "--top-k")) {
        bad = generate_opt_long(opt, v, 0, 1 << 24, &n);
        sp->top_k = (int)n;
    } else if (!strcmp(opt, "--top-p")) {
        bad = generate_opt_float(opt, v, &sp->top_p);
    } else if (!strcmp(opt, "--min-p")) {
        bad = generate_opt_float(opt, v, &sp->min_p);
    } else if (!strcmp(opt, "--repeat-penalty")) {
        bad = generate_opt_float(opt, v, &sp->repeat_penalty);
    } else if (!strcmp(opt, "--seed")) {
        llorch_error err = {0};
        bad = proc_parse_seed(opt, v, &sp->seed, &err);
        if (bad)
            fprintf(stderr, "llorch generate: %s\n", err.msg);
    } else {
        return 0;
    }
    return bad ? -1 : 1;
}
