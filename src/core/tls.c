/* tls.c - see tls.h. One SSL per connection, between two memory BIOs:
 * what the receive delivers is written into rbio, and what OpenSSL
 * writes into wbio is queued for the socket, in one copy. */
#include "tls.h"
#include "core.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 16384

/* One context per certificate, the first the default; the config they
 * were made from, for a reload. */
static SSL_CTX *server_ctx[TLS_MAX_CERTS];
static int nserver_ctx;
static struct tls_server_config server_cfg;
/* A handshake not done this long after it began is dropped, however
 * slowly its bytes trickle in: the idle timeout, shortened at each
 * arrival to what is left, which the handler's own replaces once it is
 * open. 0: none (a client's then still gets 10 s). */
static unsigned handshake_ms;
#define CLIENT_HANDSHAKE_MS 10000

struct tls_conn {
    struct transport_conn base;
    SSL *ssl;
    BIO *rbio, *wbio;          /* ciphertext from the peer, to the peer */
    bool ready;                /* the handshake is done */
    uint64_t deadline;         /* monotonic ns it must be done by, or 0 */
    char *early;               /* a client's plaintext sent before that */
    size_t early_len;
    char err[200];             /* why TLS closed it, or "" */
};

extern const struct transport tls_client;

static struct tls_conn *tc(const struct conn *c)
{
    return (struct tls_conn *)c->tp;
}

/* Start the handshake's clock: ms from now, or none for 0. */
static void deadline_set(struct core *k, struct conn *c, unsigned ms)
{
    tc(c)->deadline = ms ? k->now + (uint64_t)ms * 1000000ull : 0;
    core_set_idle(k, c, ms);
}

/* Bytes came and the handshake goes on: the idle timeout becomes what is
 * left of its time (a few bytes now and then do not reset it); false
 * once none is. */
static bool deadline_left(struct core *k, struct conn *c)
{
    uint64_t d = tc(c)->deadline;
    if (!d)
        return true;
    if (k->now >= d)
        return false;
    core_set_idle(k, c, (uint32_t)((d - k->now + 999999) / 1000000));
    return true;
}

/* OpenSSL's reason for the last failure, after what. */
static void ssl_error(char *err, size_t len, const char *what)
{
    unsigned long e = ERR_get_error();
    char reason[256] = "invalid value";
    if (e)
        ERR_error_string_n(e, reason, sizeof reason);
    snprintf(err, len, "%s: %s", what, reason);
    ERR_clear_error();
}

/* "TLSv1.2 TLSv1.3" into the lowest and highest version. */
static int parse_protocols(const char *list, int *lo, int *hi)
{
    static const struct { const char *name; int v; } known[] = {
        { "TLSv1.2", TLS1_2_VERSION }, { "TLSv1.3", TLS1_3_VERSION },
    };
    *lo = *hi = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save, *w = strtok_r(buf, " ,", &save); w; w = strtok_r(NULL, " ,", &save)) {
        int v = 0;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            if (strcmp(w, known[i].name) == 0)
                v = known[i].v;
        if (!v)
            return -1;
        if (!*lo || v < *lo)
            *lo = v;
        if (v > *hi)
            *hi = v;
    }
    return *lo ? 0 : -1;
}

/* "h2,http/1.1" in ALPN's wire form: each name after its length. */
static unsigned char alpn_wire[256];
static unsigned alpn_len;

static int parse_alpn(const char *list)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    alpn_len = 0;
    for (char *save, *w = strtok_r(buf, " ,", &save); w; w = strtok_r(NULL, " ,", &save)) {
        size_t n = strlen(w);
        if (n > 255 || alpn_len + 1 + n > sizeof alpn_wire)
            return -1;
        alpn_wire[alpn_len++] = (unsigned char)n;
        memcpy(alpn_wire + alpn_len, w, n);
        alpn_len += (unsigned)n;
    }
    return alpn_len ? 0 : -1;
}

/* The first of our protocols that the client offers; none agreed is no
 * ALPN at all, not a failed handshake. */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg)
{
    (void)ssl, (void)arg;
    unsigned char *o;
    if (SSL_select_next_proto(&o, outlen, alpn_wire, alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

static int on_sni(SSL *ssl, int *alert, void *arg);
static int on_ticket(SSL *ssl, unsigned char name[16], unsigned char *iv,
                     EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc);

static int configure(SSL_CTX *ctx, const struct tls_server_config *cfg, int i,
                     char *what, size_t wlen)
{
    int lo, hi;
    snprintf(what, wlen, "--tls-protocols '%s'", cfg->protocols ? cfg->protocols : "");
    if (parse_protocols(cfg->protocols ? cfg->protocols : "TLSv1.2 TLSv1.3", &lo, &hi) ||
        !SSL_CTX_set_min_proto_version(ctx, lo) || !SSL_CTX_set_max_proto_version(ctx, hi))
        return -1;
    /* TLS 1.2: forward secrecy and AEAD only, unless told otherwise */
    const char *ciphers = cfg->ciphers ? cfg->ciphers
                          : "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!SHA1";
    snprintf(what, wlen, "--tls-ciphers '%s'", ciphers);
    if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1)
        return -1;
    snprintf(what, wlen, "--tls-alpn '%s'", cfg->alpn ? cfg->alpn : "");
    if (cfg->alpn) {
        if (parse_alpn(cfg->alpn))
            return -1;
        SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    }
    snprintf(what, wlen, "--tls-cert %s", cfg->cert[i]);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert[i]) != 1)
        return -1;
    snprintf(what, wlen, "--tls-key %s", cfg->key[i]);
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key[i], SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1)
        return -1;
    SSL_CTX_set_tlsext_servername_callback(ctx, on_sni);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket);
    return 0;
}

/* The certificate whose names match the one the client asked for; the
 * first (the context the SSL began with) when none does. */
static int on_sni(SSL *ssl, int *alert, void *arg)
{
    (void)alert, (void)arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    for (int i = 0; name && i < nserver_ctx; i++) {
        X509 *x = SSL_CTX_get0_certificate(server_ctx[i]);
        if (x && X509_check_host(x, name, 0, 0, NULL) == 1) {
            if (SSL_get_SSL_CTX(ssl) != server_ctx[i])
                SSL_set_SSL_CTX(ssl, server_ctx[i]);
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

/* Session tickets. Their keys come from a secret drawn once, before the
 * workers fork, and the hour: every worker of a master derives the same
 * keys without a word to the others, a client resumes with whichever it
 * reaches, the keys change each hour (the last hour's still open a
 * ticket, which is then renewed), and a reload keeps them. */
#define TICKET_PERIOD_S 3600
static unsigned char ticket_secret[32];
static bool ticket_secret_set;

/* HMAC-SHA256(secret, label || window): 32 bytes into out. */
static int derive(char label, uint64_t window, unsigned char out[32])
{
    unsigned char msg[9];
    msg[0] = (unsigned char)label;
    for (int i = 0; i < 8; i++)
        msg[1 + i] = (unsigned char)(window >> (8 * i));
    size_t n = 0;
    return EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, ticket_secret,
                     sizeof ticket_secret, msg, sizeof msg, out, 32, &n) && n == 32
           ? 0 : -1;
}

/* The keys of an hour, derived once: a handshake with two tickets would
 * otherwise make six HMACs, each fetching its algorithm anew. */
struct ticket_key {
    uint64_t window;
    bool set;
    unsigned char name[32], aes[32], mac[32];
};

static const struct ticket_key *keys_for(uint64_t window)
{
    static struct ticket_key cache[2]; /* this hour and the last */
    struct ticket_key *k = &cache[window & 1];
    if (k->set && k->window == window)
        return k;
    k->set = false;
    if (derive('n', window, k->name) || derive('a', window, k->aes) ||
        derive('m', window, k->mac))
        return NULL;
    k->window = window;
    k->set = true;
    return k;
}

static int ticket_keys(const struct ticket_key *k, EVP_CIPHER_CTX *cctx,
                       EVP_MAC_CTX *hctx, const unsigned char *iv, int enc)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->mac,
                                          sizeof k->mac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    int ok = (enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv)
                  : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv)) &&
             EVP_MAC_CTX_set_params(hctx, params);
    return ok ? 0 : -1;
}

static int on_ticket(SSL *ssl, unsigned char name[16], unsigned char *iv,
                     EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    uint64_t now = (uint64_t)time(NULL) / TICKET_PERIOD_S;
    if (enc) {
        const struct ticket_key *k = keys_for(now);
        if (!k || RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1)
            return -1;
        memcpy(name, k->name, 16);
        return ticket_keys(k, cctx, hctx, iv, 1) ? -1 : 1;
    }
    for (uint64_t back = 0; back < 2; back++) { /* this hour's, the last */
        const struct ticket_key *k = keys_for(now - back);
        if (!k)
            return -1;
        if (memcmp(name, k->name, 16) != 0)
            continue;
        if (ticket_keys(k, cctx, hctx, iv, 0))
            return -1;
        /* Renew: a TLS 1.3 client spends each ticket once (RFC 8446 C.4),
         * so a resumption without a fresh one makes its next connection a
         * full handshake; a TLS 1.2 ticket is renewed when its key is the
         * last hour's. */
        return back || SSL_version(ssl) == TLS1_3_VERSION ? 2 : 1;
    }
    return 0; /* not ours, or too old: a full handshake */
}

/* A context for each certificate of cfg, into ctx[]; 0, or -1 with err. */
static int build(const struct tls_server_config *cfg, SSL_CTX **ctx, char *err,
                 size_t len)
{
    char what[600];
    for (int i = 0; i < cfg->ncert; i++) {
        ctx[i] = SSL_CTX_new(TLS_server_method());
        if (!ctx[i]) {
            ssl_error(err, len, "TLS");
            goto fail;
        }
        /* an idle connection keeps no record buffers */
        SSL_CTX_set_mode(ctx[i], SSL_MODE_RELEASE_BUFFERS);
        /* resumption is by tickets alone: a session cache in each worker
         * would not be shared by the others, and only costs memory */
        SSL_CTX_set_session_cache_mode(ctx[i], SSL_SESS_CACHE_OFF);
        /* the server's order of ciphers, not the client's (TLS 1.2), but
         * ChaCha20 for a client that puts it first: one without AES in
         * hardware */
        SSL_CTX_set_options(ctx[i], SSL_OP_CIPHER_SERVER_PREFERENCE |
                                        SSL_OP_PRIORITIZE_CHACHA);
        if (configure(ctx[i], cfg, i, what, sizeof what)) {
            ssl_error(err, len, what);
            goto fail;
        }
    }
    return 0;
fail:
    for (int i = 0; i < cfg->ncert && ctx[i]; i++) {
        SSL_CTX_free(ctx[i]);
        ctx[i] = NULL;
    }
    return -1;
}

/* Take ctx[] as the server's, freeing the old ones (an SSL keeps its own
 * reference: live connections go on with theirs). */
static void install(SSL_CTX **ctx, int n)
{
    tls_server_free();
    memcpy(server_ctx, ctx, (size_t)n * sizeof *ctx);
    nserver_ctx = n;
}

int tls_server_init(const struct tls_server_config *cfg, char *err, size_t len)
{
    SSL_CTX *ctx[TLS_MAX_CERTS] = { 0 };
    if (cfg->ncert < 1 || cfg->ncert > TLS_MAX_CERTS) {
        snprintf(err, len, "TLS: 1 to %d certificates", TLS_MAX_CERTS);
        return -1;
    }
    if (!ticket_secret_set) {
        if (RAND_bytes(ticket_secret, sizeof ticket_secret) != 1) {
            ssl_error(err, len, "TLS session tickets");
            return -1;
        }
        ticket_secret_set = true;
    }
    if (build(cfg, ctx, err, len))
        return -1;
    install(ctx, cfg->ncert);
    server_cfg = *cfg;
    handshake_ms = cfg->handshake_ms;
    return 0;
}

int tls_server_reload(char *err, size_t len)
{
    SSL_CTX *ctx[TLS_MAX_CERTS] = { 0 };
    if (!nserver_ctx)
        return 0;
    if (build(&server_cfg, ctx, err, len))
        return -1;
    install(ctx, server_cfg.ncert);
    return 0;
}

void tls_server_free(void)
{
    for (int i = 0; i < nserver_ctx; i++)
        SSL_CTX_free(server_ctx[i]);
    nserver_ctx = 0;
}

/* Queue what OpenSSL has written for the peer. */
static int flush(struct core *k, struct conn *c)
{
    struct tls_conn *t = tc(c);
    char *p;
    long n = BIO_get_mem_data(t->wbio, &p);
    if (n <= 0)
        return 0;
    int ret = core_queue(k, c, p, (size_t)n);
    (void)BIO_reset(t->wbio);
    return ret;
}

/* An SSL of ctx between two memory BIOs, for t; 0 or -ENOMEM. */
static int ssl_attach(struct tls_conn *t, SSL_CTX *ctx)
{
    t->ssl = SSL_new(ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio) {
        SSL_free(t->ssl);
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        t->ssl = NULL;
        ERR_clear_error();
        return -ENOMEM;
    }
    BIO_set_mem_eof_return(t->rbio, -1); /* empty: "more to come", not EOF */
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    return 0;
}

static struct tls_conn *tls_conn_new(SSL_CTX *ctx, const struct transport *ops)
{
    struct tls_conn *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->base.ops = ops;
    if (ctx && ssl_attach(t, ctx)) {
        free(t);
        return NULL;
    }
    return t;
}

static int tls_start(struct core *k, struct conn *c)
{
    if (!nserver_ctx)
        return -EPROTO;
    /* The SSL comes with the first bytes: a connection that says
     * nothing costs no more than a plain one (about 10 KiB less). */
    struct tls_conn *t = tls_conn_new(NULL, &tls_server);
    if (!t)
        return -ENOMEM;
    c->tp = &t->base;
    deadline_set(k, c, handshake_ms);
    return 1; /* the handler hears of c once the handshake is done */
}

/* A TLS failure: say why at debug (a scanner's garbage is not news),
 * and close. */
static int failed(const struct conn *c, const char *what)
{
    struct tls_conn *t = tc(c);
    long v = SSL_get_verify_result(t->ssl);
    if (!t->ready && v != X509_V_OK) {
        snprintf(t->err, sizeof t->err, "certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
        ERR_clear_error();
    } else {
        ssl_error(t->err, sizeof t->err, what);
    }
    log_debug("connection %llu: %s", (unsigned long long)c->id, t->err);
    return -EPROTO;
}

/* Decrypt what has come for the handler, while it reads. */
static int pump(struct core *k, struct conn *c)
{
    struct tls_conn *t = tc(c);
    char buf[CHUNK];
    while (c->state == CONN_OPEN && !(c->flags & CF_READ_PAUSED)) {
        int r = SSL_read(t->ssl, buf, sizeof buf);
        if (r > 0) {
            core_deliver(k, c, buf, (size_t)r);
            continue;
        }
        int e = SSL_get_error(t->ssl, r);
        int ret = flush(k, c); /* tickets, key updates, alerts */
        if (ret)
            return ret;
        if (e == SSL_ERROR_WANT_READ)
            return 0;
        if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: the peer is done */
            core_close(k, c, REASON_EOF, false);
            return 0;
        }
        return failed(c, "TLS read");
    }
    return flush(k, c);
}

static int tls_recv(struct core *k, struct conn *c, const char *p, size_t n)
{
    struct tls_conn *t = tc(c);
    if (!t->ssl) { /* a server's first bytes */
        if (!n)
            return 0;
        if (ssl_attach(t, server_ctx[0]))
            return -ENOMEM;
        SSL_set_accept_state(t->ssl);
    }
    if (n && BIO_write(t->rbio, p, (int)n) != (int)n)
        return -ENOMEM;
    if (!t->ready) {
        int r = SSL_do_handshake(t->ssl);
        int ret = flush(k, c);
        if (ret)
            return ret;
        if (r != 1) {
            if (SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ)
                return failed(c, "TLS handshake");
            return deadline_left(k, c) ? 0 : -ETIMEDOUT;
        }
        t->ready = true;
        core_set_idle(k, c, 0);
        if (t->early) { /* what a client was sent while it connected */
            char *e = t->early;
            size_t n = t->early_len;
            t->early = NULL;
            ret = c->tp->ops->send(k, c, e, n);
            free(e);
            if (ret)
                return ret;
        }
        core_ready(k, c);
    }
    return pump(k, c);
}

static int tls_send(struct core *k, struct conn *c, const void *p, size_t n)
{
    struct tls_conn *t = tc(c);
    if (!t->ready) { /* a client still connecting: keep it for later */
        char *e = realloc(t->early, t->early_len + n);
        if (!e)
            return -ENOMEM;
        memcpy(e + t->early_len, p, n);
        t->early = e;
        t->early_len += n;
        return 0;
    }
    const char *q = p;
    while (n) { /* a memory BIO takes it all: SSL_write does not stop short */
        int r = SSL_write(t->ssl, q, n > INT_MAX ? INT_MAX : (int)n);
        if (r <= 0)
            return failed(c, "TLS write");
        q += r;
        n -= (size_t)r;
    }
    return flush(k, c);
}

/* A close_notify goes out after the handler's last bytes, so that the
 * peer can tell the end from a cut. */
static void tls_shutdown(struct core *k, struct conn *c)
{
    struct tls_conn *t = tc(c);
    if (!t->ready)
        return;
    SSL_shutdown(t->ssl);
    ERR_clear_error();
    flush(k, c);
}

static void tls_release(struct core *k, struct conn *c)
{
    (void)k;
    struct tls_conn *t = tc(c);
    SSL_free(t->ssl); /* and its BIOs */
    free(t->early);
    free(t);
    c->tp = NULL;
}

const struct transport tls_server = {
    .name = "tls", .start = tls_start, .recv = tls_recv, .send = tls_send,
    .shutdown = tls_shutdown, .release = tls_release,
};

/* Client contexts: the system's trust store, and one per CA file asked
 * for, kept for the process's life (a handful at most). */
static struct client_ctx {
    char *ca;                  /* NULL: the system's */
    SSL_CTX *ctx;
} client_ctx[8];

static SSL_CTX *client_ctx_for(const char *ca, char *err, size_t len)
{
    unsigned i = 0;
    for (; i < sizeof client_ctx / sizeof client_ctx[0] && client_ctx[i].ctx; i++)
        if (ca ? client_ctx[i].ca && strcmp(client_ctx[i].ca, ca) == 0 : !client_ctx[i].ca)
            return client_ctx[i].ctx;
    if (i == sizeof client_ctx / sizeof client_ctx[0]) {
        snprintf(err, len, "too many CA files");
        return NULL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        (ca ? SSL_CTX_load_verify_locations(ctx, ca, NULL)
            : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
        ssl_error(err, len, ca ? ca : "the system's CA store");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    client_ctx[i].ctx = ctx;
    client_ctx[i].ca = ca ? strdup(ca) : NULL;
    return ctx;
}

struct transport_conn *tls_client_new(const struct tls_client_opts *o, char *err,
                                      size_t len)
{
    SSL_CTX *ctx = client_ctx_for(o->ca, err, len);
    if (!ctx)
        return NULL;
    struct tls_conn *t = tls_conn_new(ctx, &tls_client);
    if (!t) {
        snprintf(err, len, "out of memory");
        return NULL;
    }
    SSL_set_connect_state(t->ssl);
    const char *name = o->server_name;
    if (name && *name && SSL_set_tlsext_host_name(t->ssl, name) != 1)
        goto bad;
    SSL_set_verify(t->ssl, o->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (o->verify && name && *name && SSL_set1_host(t->ssl, name) != 1)
        goto bad;
    return &t->base;
bad:
    ssl_error(err, len, name);
    SSL_free(t->ssl);
    free(t);
    return NULL;
}

/* Connected: say hello. */
static int tls_client_start(struct core *k, struct conn *c)
{
    struct tls_conn *t = tc(c);
    deadline_set(k, c, handshake_ms ? handshake_ms : CLIENT_HANDSHAKE_MS);
    int r = SSL_do_handshake(t->ssl);
    int ret = flush(k, c);
    if (ret)
        return ret;
    if (r != 1 && SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ)
        return failed(c, "TLS handshake");
    return 1;
}

const struct transport tls_client = {
    .name = "tls", .start = tls_client_start, .recv = tls_recv, .send = tls_send,
    .shutdown = tls_shutdown, .release = tls_release,
};

/* c's TLS state, or NULL when c is not a TLS connection. */
static const struct tls_conn *tls_of(const struct conn *c)
{
    if (!c->tp || (c->tp->ops != &tls_server && c->tp->ops != &tls_client))
        return NULL;
    return tc(c);
}

const char *tls_error(const struct conn *c)
{
    const struct tls_conn *t = tls_of(c);
    return t && t->err[0] ? t->err : NULL;
}

bool tls_info(const struct conn *c, struct tls_info *out)
{
    const struct tls_conn *t = tls_of(c);
    if (!t || !t->ready)
        return false;
    SSL *s = t->ssl;
    out->version = SSL_get_version(s);
    out->cipher = SSL_get_cipher_name(s);
    out->sni = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    const unsigned char *a;
    unsigned alen;
    SSL_get0_alpn_selected(s, &a, &alen);
    if (!a || alen >= sizeof out->alpn)
        alen = 0; /* none agreed (a is NULL then) */
    if (alen)
        memcpy(out->alpn, a, alen);
    out->alpn[alen] = 0;
    return true;
}
