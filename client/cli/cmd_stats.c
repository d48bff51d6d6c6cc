/* cmd_stats.c - `llorch stats`: a running router's counters as JSON. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lib/llorch.h"

int cmd_stats(int argc, char **argv)
{
    const char *endpoint = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: llorch stats --router EP\n\n"
                   "Prints the router's counters (requests, tokens_in, tokens_out, batches, rows,\n"
                   "max_rows_in_batch, mean_rows_per_batch, sessions_active, queue_depth,\n"
                   "workers_alive, pipelines_ready, ...) as one JSON object.\n");
            return 0;
        } else if (!strcmp(argv[i], "--router") && i + 1 < argc) {
            endpoint = argv[++i];
        } else {
            fprintf(stderr, "llorch stats: unknown option %s (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!endpoint) {
        fprintf(stderr, "llorch stats: --router EP is required\n");
        return 2;
    }
    char errbuf[512];
    llorch_client *c = llorch_connect(endpoint, NULL, errbuf, sizeof errbuf);
    llorch_stat stats[256];
    size_t n = 0;
    if (!c || llorch_stats(c, stats, 256, &n, 5000, errbuf, sizeof errbuf) != 0) {
        fprintf(stderr, "llorch stats: %s\n", errbuf);
        llorch_close(&c);
        return 1;
    }
    llorch_close(&c);
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++)
        json_object_set_new(o, stats[i].name, json_real(stats[i].value));
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(o);
    puts(s ? s : "{}");
    free(s);
    return 0;
}
