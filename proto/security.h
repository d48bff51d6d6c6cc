/* security.h - CurveZMQ key files and a ZAP handler that admits only listed client keys. */
#ifndef LLORCH_SECURITY_H
#define LLORCH_SECURITY_H

/* On tcp:// every llorch server socket is a CURVE server and every client a CURVE client
 * that knows the server's public key; the server's ZeroMQ context runs a ZAP handler that
 * accepts a client only when its public key is in the allow-list file. Keys travel and
 * sit in files as Z85 text (40 characters for 32 bytes).
 *
 * Key file (written by security_keypair_save, e.g. `llorch keygen`):
 *     # comment
 *     public-key = "Z85..."
 *     secret-key = "Z85..."        (absent in the .pub file)
 * Other lines are ignored, so czmq certificate files load as well.
 * Allow-list file: one public key per line, either bare Z85 followed by an optional
 * label, or a `public-key = "..."` line (so `cat *.pub >> allow` works); '#' comments
 * and blank lines are ignored. */

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

#define SECURITY_Z85_KEY_LEN 40
#define SECURITY_MAX_ALLOWED 4096      /* keys in an allow-list */
#define SECURITY_ZAP_DOMAIN "llorch"   /* ZAP domain set on server sockets */

typedef struct security_keypair {
    char public_key[SECURITY_Z85_KEY_LEN + 1]; /* Z85 */
    char secret_key[SECURITY_Z85_KEY_LEN + 1]; /* Z85, "" when only the public key is known */
} security_keypair;

/* Makes a new CURVE key pair. Returns 0, or -1 with err (libzmq built without CURVE). */
int security_keypair_generate(security_keypair *kp, llorch_error *err);

/* Writes the pair to secret_path (mode 0600) and the public key alone to public_path
 * (mode 0644). Refuses to overwrite either file. Returns 0, or -1 with err; on failure
 * no file is left behind. */
int security_keypair_save(const security_keypair *kp, const char *secret_path,
                          const char *public_path, llorch_error *err);

/* Reads a key file: both keys from a secret file (checked to belong together), or the
 * public key alone from a .pub file (secret_key = ""). Returns 0, or -1 with err naming
 * the file and line. */
int security_keypair_load(const char *path, security_keypair *kp, llorch_error *err);

/* True when z85 is 40 Z85 characters that decode to 32 bytes. */
bool security_key_valid(const char *z85);

/* A public key given on a command line or in an API: the path of a key file (read with
 * security_keypair_load) when a file of that name exists, else the 40-character Z85 key
 * itself (a path can be 40 Z85 characters too, so the file is looked for first). Writes
 * the key to out. Returns 0, or -1 with err saying it is neither. */
int security_public_key_arg(const char *arg, char out[SECURITY_Z85_KEY_LEN + 1],
                            llorch_error *err);

/* Makes socket a CURVE server with the pair's secret key and the llorch ZAP domain.
 * Call before bind. Returns 0, or -1 with err. */
int security_server_setup(void *socket, const security_keypair *server, llorch_error *err);

/* Makes socket a CURVE client with its own pair, trusting server_public_key (Z85).
 * Call before connect. Returns 0, or -1 with err. */
int security_client_setup(void *socket, const security_keypair *client,
                          const char *server_public_key, llorch_error *err);

/* A running ZAP handler: a thread answering inproc://zeromq.zap.01 in one context. */
typedef struct security_zap security_zap;

/* Starts the handler for zmq_context with the keys of allow_list_path. Only CURVE
 * clients whose key is listed are accepted; every other mechanism is refused. Start it
 * before binding server sockets in that context (one handler per context). Returns
 * NULL with err when the list cannot be read or the handler cannot bind. */
security_zap *security_zap_start(void *zmq_context, const char *allow_list_path,
                                 llorch_error *err);

/* Reads the allow-list file again (after an operator edited it). On error the old list
 * stays in force. Returns 0 or -1 with err. Thread-safe. */
int security_zap_reload(security_zap *zap, llorch_error *err);

/* How many handshakes the handler accepted and refused so far. Thread-safe. */
void security_zap_counts(security_zap *zap, uint64_t *accepted, uint64_t *refused);

/* Stops the thread, closes its socket (before the context is terminated) and frees
 * *zap, setting it to NULL. Safe on NULL and *zap == NULL. */
void security_zap_stop(security_zap **zap);

#endif
