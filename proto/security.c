/* security.c - CurveZMQ key files and the ZAP allow-list handler of llorch servers. */
#include "security.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define S_LINE_MAX 1024
#define S_LABEL_MAX 64
#define S_MAX_LINES 100000

bool security_key_valid(const char *z85)
{
    uint8_t raw[32];
    return z85 && strlen(z85) == SECURITY_Z85_KEY_LEN && zmq_z85_decode(raw, z85) != NULL;
}

int security_keypair_generate(security_keypair *kp, llorch_error *err)
{
    memset(kp, 0, sizeof *kp);
    if (zmq_curve_keypair(kp->public_key, kp->secret_key) != 0)
        return llorch_error_set(err, "cannot make a CURVE key pair: %s (libzmq needs CURVE "
                                "support, i.e. libsodium)", zmq_strerror(errno));
    return 0;
}

static int s_write_file(const char *path, mode_t mode, const char *text, llorch_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return llorch_error_set(err, "%s: %s%s", path, strerror(errno),
                                errno == EEXIST ? " (remove it or choose another name; keys "
                                                  "are never overwritten)" : "");
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    int e = errno;
    if (close(fd) != 0 || w != (ssize_t)n) {
        unlink(path);
        return llorch_error_set(err, "%s: cannot write: %s", path, strerror(w < 0 ? e : EIO));
    }
    return 0;
}

int security_keypair_save(const security_keypair *kp, const char *secret_path,
                          const char *public_path, llorch_error *err)
{
    if (!security_key_valid(kp->public_key) || !security_key_valid(kp->secret_key))
        return llorch_error_set(err, "cannot save: the key pair is not two Z85 keys");
    char text[512];
    snprintf(text, sizeof text,
             "# llorch CurveZMQ key pair: keep this file secret (mode 0600)\n"
             "public-key = \"%s\"\nsecret-key = \"%s\"\n", kp->public_key, kp->secret_key);
    if (s_write_file(secret_path, 0600, text, err) != 0)
        return -1;
    snprintf(text, sizeof text,
             "# llorch CurveZMQ public key: give it to peers, add it to allow-lists\n"
             "public-key = \"%s\"\n", kp->public_key);
    if (s_write_file(public_path, 0644, text, err) != 0) {
        unlink(secret_path);
        return -1;
    }
    return 0;
}

/* The value of `name = "value"` (quotes optional) when line (already trimmed) starts
 * with name; copies at most cap-1 bytes. Returns 1 when the line is about name. */
static int s_field(const char *line, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    if (strncmp(line, name, n) != 0)
        return 0;
    const char *p = line + n;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p != '=')
        return 0;
    p++;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '"')
        p++;
    size_t len = strcspn(p, "\" \t\r\n");
    if (len >= cap)
        len = cap - 1;
    memcpy(out, p, len);
    out[len] = 0;
    return 1;
}

/* The line without leading blanks and trailing newline/blanks. */
static char *s_trim(char *line)
{
    while (*line == ' ' || *line == '\t')
        line++;
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                 line[n - 1] == '\t'))
        line[--n] = 0;
    return line;
}

int security_keypair_load(const char *path, security_keypair *kp, llorch_error *err)
{
    memset(kp, 0, sizeof *kp);
    FILE *f = fopen(path, "re");
    if (!f)
        return llorch_error_set(err, "%s: %s", path, strerror(errno));
    char buf[S_LINE_MAX], value[S_LINE_MAX];
    int line_no = 0, rc = 0;
    bool have_public = false, have_secret = false;
    while (rc == 0 && fgets(buf, sizeof buf, f) && ++line_no <= S_MAX_LINES) {
        char *line = s_trim(buf);
        bool is_secret = false;
        if (s_field(line, "public-key", value, sizeof value))
            is_secret = false;
        else if (s_field(line, "secret-key", value, sizeof value))
            is_secret = true;
        else
            continue;
        if (!security_key_valid(value)) {
            rc = llorch_error_set(err, "%s:%d: the %s is not a 40-character Z85 key", path,
                                  line_no, is_secret ? "secret key" : "public key");
            break;
        }
        memcpy(is_secret ? kp->secret_key : kp->public_key, value, SECURITY_Z85_KEY_LEN + 1);
        *(is_secret ? &have_secret : &have_public) = true;
    }
    struct stat st;
    if (rc == 0 && have_secret && fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
        log_warn("%s holds a secret key but other users can read it; run chmod 600 %s", path,
                 path);
    fclose(f);
    if (rc != 0)
        return rc;
    if (!have_public && !have_secret)
        return llorch_error_set(err, "%s: no public-key line (make keys with llorch keygen)",
                                path);
    if (have_secret) {
        char derived[SECURITY_Z85_KEY_LEN + 1];
        if (zmq_curve_public(derived, kp->secret_key) != 0)
            return llorch_error_set(err, "%s: cannot derive the public key: %s", path,
                                    zmq_strerror(errno));
        if (have_public && strcmp(derived, kp->public_key) != 0)
            return llorch_error_set(err, "%s: the public key does not belong to the secret key",
                                    path);
        memcpy(kp->public_key, derived, sizeof derived);
    }
    return 0;
}

int security_public_key_arg(const char *arg, char out[SECURITY_Z85_KEY_LEN + 1],
                            llorch_error *err)
{
    if (access(arg, F_OK) != 0 && security_key_valid(arg)) {
        snprintf(out, SECURITY_Z85_KEY_LEN + 1, "%s", arg);
        return 0;
    }
    security_keypair kp;
    if (security_keypair_load(arg, &kp, err) != 0)
        return llorch_error_prefix(err, "'%.64s' is neither a Z85 key nor a key file", arg);
    snprintf(out, SECURITY_Z85_KEY_LEN + 1, "%s", kp.public_key);
    return 0;
}

int security_server_setup(void *socket, const security_keypair *server, llorch_error *err)
{
    int one = 1;
    if (!security_key_valid(server->secret_key))
        return llorch_error_set(err, "CURVE server: no valid secret key (load a key file made "
                                "by llorch keygen)");
    if (zmq_setsockopt(socket, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, server->secret_key,
                       SECURITY_Z85_KEY_LEN) != 0 ||
        zmq_setsockopt(socket, ZMQ_ZAP_DOMAIN, SECURITY_ZAP_DOMAIN,
                       strlen(SECURITY_ZAP_DOMAIN)) != 0)
        return llorch_error_set(err, "CURVE server set-up: %s", zmq_strerror(errno));
    return 0;
}

int security_client_setup(void *socket, const security_keypair *client,
                          const char *server_public_key, llorch_error *err)
{
    if (!security_key_valid(client->public_key) || !security_key_valid(client->secret_key))
        return llorch_error_set(err, "CURVE client: no valid key pair (load a key file made by "
                                "llorch keygen)");
    if (!security_key_valid(server_public_key))
        return llorch_error_set(err, "CURVE client: the server's public key is not a Z85 key");
    if (zmq_setsockopt(socket, ZMQ_CURVE_SERVERKEY, server_public_key,
                       SECURITY_Z85_KEY_LEN) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_PUBLICKEY, client->public_key,
                       SECURITY_Z85_KEY_LEN) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, client->secret_key,
                       SECURITY_Z85_KEY_LEN) != 0)
        return llorch_error_set(err, "CURVE client set-up: %s", zmq_strerror(errno));
    return 0;
}

/* ---- the ZAP handler (ZeroMQ RFC 27) ---- */

typedef struct s_allowed {
    uint8_t key[32];
    char label[S_LABEL_MAX + 1]; /* the line's label, else the Z85 key */
} s_allowed;

struct security_zap {
    void *socket; /* REP on inproc://zeromq.zap.01, used only by the thread after start */
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t lock; /* guards the list and the counters */
    char *path;
    s_allowed *allowed;
    size_t n_allowed;
    uint64_t accepted, refused;
};

/* Parses an allow-list file into a new array. */
static int s_load_allow_list(const char *path, s_allowed **out, size_t *n_out,
                             llorch_error *err)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return llorch_error_set(err, "allow-list %s: %s", path, strerror(errno));
    s_allowed *list = NULL;
    size_t n = 0, cap = 0;
    char buf[S_LINE_MAX], value[S_LINE_MAX];
    int line_no = 0, rc = 0;
    while (fgets(buf, sizeof buf, f)) {
        if (++line_no > S_MAX_LINES) {
            rc = llorch_error_set(err, "allow-list %s: more than %d lines", path, S_MAX_LINES);
            break;
        }
        char *line = s_trim(buf);
        if (!*line || *line == '#')
            continue;
        const char *label = "";
        if (!s_field(line, "public-key", value, sizeof value)) {
            size_t len = strcspn(line, " \t");
            if (len >= sizeof value)
                len = sizeof value - 1;
            memcpy(value, line, len);
            value[len] = 0;
            label = line + len;
            while (*label == ' ' || *label == '\t')
                label++;
        }
        if (!security_key_valid(value)) {
            rc = llorch_error_set(err, "allow-list %s:%d: \"%.48s\" is not a 40-character Z85 "
                                  "public key", path, line_no, value);
            break;
        }
        if (n == SECURITY_MAX_ALLOWED) {
            rc = llorch_error_set(err, "allow-list %s: more than %d keys", path,
                                  SECURITY_MAX_ALLOWED);
            break;
        }
        if (n == cap) {
            size_t new_cap = cap ? cap * 2 : 16;
            s_allowed *grown = realloc(list, new_cap * sizeof *grown);
            if (!grown) {
                rc = llorch_error_set(err, "allow-list %s: out of memory", path);
                break;
            }
            list = grown, cap = new_cap;
        }
        zmq_z85_decode(list[n].key, value);
        snprintf(list[n].label, sizeof list[n].label, "%.*s", S_LABEL_MAX, *label ? label : value);
        n++;
    }
    fclose(f);
    if (rc != 0) {
        free(list);
        return rc;
    }
    *out = list, *n_out = n;
    return 0;
}

/* Answers one ZAP request waiting on the socket. */
static void s_zap_handle(security_zap *z)
{
    enum { MAX_PARTS = 8 };
    zmq_msg_t parts[MAX_PARTS];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t scratch; /* receive into place: a zmq_msg_t must not be copied */
        zmq_msg_t *part = n < MAX_PARTS ? &parts[n] : &scratch;
        zmq_msg_init(part);
        if (zmq_msg_recv(part, z->socket, 0) < 0) {
            zmq_msg_close(part);
            break;
        }
        more = zmq_msg_more(part);
        if (part == &scratch)
            zmq_msg_close(part);
        else
            n++;
    }
    /* frames: version, request id, domain, address, identity, mechanism, credentials... */
    const char *status = "400", *text = "client key not in the allow-list";
    char user[S_LABEL_MAX + 1] = "";
    char address[64] = "?";
    bool ok_request = n >= 6 && zmq_msg_size(&parts[0]) == 3 &&
                      memcmp(zmq_msg_data(&parts[0]), "1.0", 3) == 0;
    if (!ok_request) {
        status = "500", text = "malformed ZAP request";
    } else {
        size_t alen = zmq_msg_size(&parts[3]);
        snprintf(address, sizeof address, "%.*s", (int)(alen < 63 ? alen : 63),
                 (const char *)zmq_msg_data(&parts[3]));
        bool curve = zmq_msg_size(&parts[5]) == 5 &&
                     memcmp(zmq_msg_data(&parts[5]), "CURVE", 5) == 0;
        if (!curve) {
            text = "only CURVE clients are accepted";
        } else if (n >= 7 && zmq_msg_size(&parts[6]) == 32) {
            const uint8_t *key = zmq_msg_data(&parts[6]);
            pthread_mutex_lock(&z->lock);
            for (size_t i = 0; i < z->n_allowed; i++)
                if (memcmp(z->allowed[i].key, key, 32) == 0) {
                    status = "200", text = "OK";
                    snprintf(user, sizeof user, "%s", z->allowed[i].label);
                    break;
                }
            pthread_mutex_unlock(&z->lock);
        }
    }
    pthread_mutex_lock(&z->lock);
    if (status[0] == '2')
        z->accepted++;
    else
        z->refused++;
    pthread_mutex_unlock(&z->lock);
    if (status[0] != '2') {
        char key[SECURITY_Z85_KEY_LEN + 1] = "(none)";
        if (ok_request && n >= 7 && zmq_msg_size(&parts[6]) == 32)
            zmq_z85_encode(key, zmq_msg_data(&parts[6]), 32);
        log_warn("refused a connection from %s with key %s: %s (allow-list %s)", address, key,
                 text, z->path);
    }
    const void *req_id = n >= 2 ? zmq_msg_data(&parts[1]) : "";
    size_t req_id_len = n >= 2 ? zmq_msg_size(&parts[1]) : 0;
    zmq_send(z->socket, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(z->socket, req_id, req_id_len, ZMQ_SNDMORE);
    zmq_send(z->socket, status, 3, ZMQ_SNDMORE);
    zmq_send(z->socket, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(z->socket, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(z->socket, "", 0, 0);
    for (int i = 0; i < n; i++)
        zmq_msg_close(&parts[i]);
}

static void *s_zap_thread(void *arg)
{
    security_zap *z = arg;
    while (!atomic_load(&z->stop)) {
        zmq_pollitem_t item = {.socket = z->socket, .events = ZMQ_POLLIN};
        int rc = zmq_poll(&item, 1, 100); /* ms: how soon a stop request is seen */
        if (rc < 0 && errno == ETERM)
            break;
        if (rc > 0 && (item.revents & ZMQ_POLLIN))
            s_zap_handle(z);
    }
    return NULL;
}

security_zap *security_zap_start(void *zmq_context, const char *allow_list_path,
                                 llorch_error *err)
{
    security_zap *z = calloc(1, sizeof *z);
    if (!z || !(z->path = strdup(allow_list_path))) {
        free(z);
        llorch_error_set(err, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&z->lock, NULL);
    atomic_init(&z->stop, false);
    if (s_load_allow_list(allow_list_path, &z->allowed, &z->n_allowed, err) != 0)
        goto fail;
    z->socket = zmq_socket(zmq_context, ZMQ_REP);
    int linger = 0;
    if (!z->socket) {
        llorch_error_set(err, "ZAP handler: %s", zmq_strerror(errno));
        goto fail;
    }
    zmq_setsockopt(z->socket, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(z->socket, "inproc://zeromq.zap.01") != 0) {
        llorch_error_set(err, "ZAP handler: cannot bind inproc://zeromq.zap.01: %s (one "
                         "handler per context)", zmq_strerror(errno));
        goto fail;
    }
    if (pthread_create(&z->thread, NULL, s_zap_thread, z) != 0) {
        llorch_error_set(err, "ZAP handler: cannot start its thread");
        goto fail;
    }
    log_info("ZAP handler: %zu allowed client key(s) from %s", z->n_allowed, z->path);
    return z;
fail:
    if (z->socket)
        zmq_close(z->socket);
    pthread_mutex_destroy(&z->lock);
    free(z->allowed);
    free(z->path);
    free(z);
    return NULL;
}

int security_zap_reload(security_zap *z, llorch_error *err)
{
    s_allowed *list = NULL;
    size_t n = 0;
    if (s_load_allow_list(z->path, &list, &n, err) != 0)
        return -1;
    pthread_mutex_lock(&z->lock);
    s_allowed *old = z->allowed;
    z->allowed = list, z->n_allowed = n;
    pthread_mutex_unlock(&z->lock);
    free(old);
    log_info("ZAP handler: reloaded %zu allowed client key(s) from %s", n, z->path);
    return 0;
}

void security_zap_counts(security_zap *z, uint64_t *accepted, uint64_t *refused)
{
    pthread_mutex_lock(&z->lock);
    if (accepted)
        *accepted = z->accepted;
    if (refused)
        *refused = z->refused;
    pthread_mutex_unlock(&z->lock);
}

void security_zap_stop(security_zap **zap)
{
    if (!zap || !*zap)
        return;
    security_zap *z = *zap;
    atomic_store(&z->stop, true);
    pthread_join(z->thread, NULL);
    zmq_close(z->socket);
    pthread_mutex_destroy(&z->lock);
    free(z->allowed);
    free(z->path);
    free(z);
    *zap = NULL;
}
