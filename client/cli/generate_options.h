/* generate_options.h - the options `llorch generate` reads alike in-process and through a pipeline. */
#ifndef LLORCH_GENERATE_OPTIONS_H
#define LLORCH_GENERATE_OPTIONS_H

#include "kv_cache.h"
#include "sampler.h"

/* A decimal integer in [min, max] (proc_parse_long). 0, or -1 after saying on stderr
 * what is wrong. */
int generate_opt_long(const char *opt, const char *v, long min, long max, long *out);

/* A finite decimal number (proc_parse_float). 0, or -1 after saying on stderr what is
 * wrong. */
int generate_opt_float(const char *opt, const char *v, float *out);

/* "f32" or "f16" (kv_type_parse). 0, or -1 after saying on stderr what is wrong. */
int generate_opt_kv_type(const char *opt, const char *v, kv_type *out);

/* Reads opt with its value v into sp when it is a sampling option (--temp, --top-k,
 * --top-p, --min-p, --repeat-penalty, --seed). 1 when read, 0 when opt is not one of
 * them, -1 after saying on stderr what is wrong with v. */
int generate_opt_sampling(const char *opt, const char *v, sampler_params *sp);

#endif
