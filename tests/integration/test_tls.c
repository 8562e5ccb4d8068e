/* test_tls.c - tls:// listeners: the handshake with openssl s_client and
 * python's ssl, plaintext both ways for the handler, conn:tls(), a
 * plain listener beside, bad input, a handshake that never comes, bad
 * certificates at start, and several workers. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

static char *cert, *key; /* made once, by openssl req */

/* Echoes, prefixed by what conn:tls() and conn:listener() say, once per
 * connection. */
static const char info_lua[] =
    "local told = {}\n"
    "return {\n"
    "  on_data = function(conn, data)\n"
    "    if not told[conn] then\n"
    "      told[conn] = true\n"
    "      local t = conn:tls()\n"
    "      conn:send(conn:listener(), ' ', t and (t.version .. ' ' .. t.cipher ..\n"
    "                ' ' .. tostring(t.sni) .. (t.alpn and ' ' .. t.alpn or '')) or 'plain',\n"
    "                '\\n')\n"
    "    end\n"
    "    conn:send(data)\n"
    "    if data == 'hello, bye\\n' then conn:close() end\n"
    "  end,\n"
    "  on_close = function(conn) told[conn] = nil end,\n"
    "}\n";


static int make_cert(void **state)
{
    (void)state;
    char *dir_file = h_write_file(NULL, "placeholder", "");
    char *dir = h_dirname(dir_file);
    free(dir_file);
    cert = malloc(strlen(dir) + 16);
    key = malloc(strlen(dir) + 16);
    sprintf(cert, "%s/cert.pem", dir);
    sprintf(key, "%s/key.pem", dir);
    free(dir);
    const char *argv[] = { "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                           "-keyout", key, "-out", cert, "-days", "2",
                           "-subj", "/CN=localhost", NULL };
    char *out;
    int rc = h_exec(argv, NULL, &out, H_WAIT_MS, true);
    free(out);
    return rc == 0 ? 0 : -1;
}

/* Another certificate, for name, beside the first: its paths. */
static void make_named(const char *name, char **c, char **k)
{
    *c = malloc(strlen(cert) + 64);
    *k = malloc(strlen(cert) + 64);
    sprintf(*c, "%.*s/%s.pem", (int)(strrchr(cert, '/') - cert), cert, name);
    sprintf(*k, "%.*s/%s.key", (int)(strrchr(cert, '/') - cert), cert, name);
    char subj[80], san[80];
    snprintf(subj, sizeof subj, "/CN=%s", name);
    snprintf(san, sizeof san, "subjectAltName=DNS:%s", name);
    const char *argv[] = { "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                           "-keyout", *k, "-out", *c, "-days", "2", "-subj", subj,
                           "-addext", san, NULL };
    char *out;
    assert_int_equal(h_exec(argv, NULL, &out, H_WAIT_MS, true), 0);
    free(out);
}

/* Which certificate a client asking for each name gets (its CN), and how
 * many of 10 connections resume the first one's session (TLS 1.2); then
 * 10 TLS 1.3 connections, each resuming with the ticket the one before
 * got: how many resumed, and how many were handed a fresh ticket (a TLS
 * 1.3 client spends each ticket once). */
static const char py_names[] =
    "import socket, ssl, sys\n"
    "port = int(sys.argv[1])\n"
    "c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n"
    "c.maximum_version = ssl.TLSVersion.TLSv1_2\n"
    "def conn(sni, sess=None):\n"
    "    s = c.wrap_socket(socket.create_connection(('127.0.0.1', port), timeout=10),\n"
    "                      server_hostname=sni, session=sess)\n"
    "    s.sendall(b'x'); s.recv(100)\n"
    "    der = s.getpeercert(binary_form=True)\n"
    "    cn = [n for n in sys.argv[2:] if n.encode() in der]\n"
    "    return s, (cn or ['?'])[0]\n"
    "first, _ = conn(sys.argv[2]); sess = first.session\n"
    "print(' '.join(conn(n)[1] for n in sys.argv[2:] + ['other.test']))\n"
    "print(sum(conn(sys.argv[2], sess)[0].session_reused for _ in range(10)))\n"
    "c.maximum_version = ssl.TLSVersion.TLSv1_3\n"
    "sess = conn(sys.argv[2])[0].session; reused = fresh = 0\n"
    "for _ in range(10):\n"
    "    s = conn(sys.argv[2], sess)[0]\n"
    "    reused += s.session_reused; fresh += s.session.id != sess.id; sess = s.session\n"
    "print(reused, fresh)\n";

static char *names(int port, const char *a, const char *b)
{
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    const char *argv[] = { "python3", "-c", py_names, p, a, b, NULL };
    char *out;
    assert_int_equal(h_exec(argv, NULL, &out, 2 * H_WAIT_MS, true), 0);
    return out;
}

/* --tls-cert/--tls-key pairs: the certificate by SNI, the first when no
 * name matches; tickets resume across the workers of a master. */
static void test_sni_tickets(void **state)
{
    (void)state;
    char *ca, *ka, *cb, *kb;
    make_named("a.test", &ca, &ka);
    make_named("b.test", &cb, &kb);
    const char *opts[] = { "-w", "2", "-l", "tls://127.0.0.1:0", "--tls-cert", ca,
                           "--tls-key", ka, "--tls-cert", cb, "--tls-key", kb, NULL };
    struct h_server s;
    char *path = h_serve(&s, info_lua, opts, NULL);
    char *out = names(s.port, "a.test", "b.test");
    assert_string_equal(out, "a.test b.test a.test\n10\n10 10\n");
    free(out);
    h_finish(&s, path);
    free(ca); free(ka); free(cb); free(kb);
}

/* SIGHUP reads the certificate files again; a bad one leaves the old. */
static void test_reload(void **state)
{
    (void)state;
    char *ca, *ka, *cb, *kb;
    make_named("a.test", &ca, &ka);
    make_named("b.test", &cb, &kb);
    char *live_c = h_write_file(NULL, "live.pem", "");
    char *dir = h_dirname(live_c);
    char *live_k = h_write_file(dir, "live.key", "");
    const char *cp[] = { "cp", ca, live_c, NULL }, *kp[] = { "cp", ka, live_k, NULL };
    char *out;
    assert_int_equal(h_exec(cp, NULL, &out, H_WAIT_MS, true), 0); free(out);
    assert_int_equal(h_exec(kp, NULL, &out, H_WAIT_MS, true), 0); free(out);
    const char *opts[] = { "-l", "tls://127.0.0.1:0", "--tls-cert", live_c,
                           "--tls-key", live_k, NULL };
    struct h_server s;
    char *path = h_serve(&s, info_lua, opts, NULL);
    out = names(s.port, "a.test", "b.test");
    assert_non_null(strstr(out, "a.test a.test a.test"));
    free(out);
    const char *cp2[] = { "cp", cb, live_c, NULL }, *kp2[] = { "cp", kb, live_k, NULL };
    assert_int_equal(h_exec(cp2, NULL, &out, H_WAIT_MS, true), 0); free(out);
    assert_int_equal(h_exec(kp2, NULL, &out, H_WAIT_MS, true), 0); free(out);
    kill(s.pid, SIGHUP);
    assert_true(h_log_wait(&s, "TLS certificates reloaded", H_WAIT_MS));
    out = names(s.port, "a.test", "b.test");
    assert_non_null(strstr(out, "b.test b.test b.test"));
    free(out);
    h_save(live_c, "not a certificate\n", "inplace");
    kill(s.pid, SIGHUP);
    assert_true(h_log_wait(&s, "not reloaded, the old ones stay", H_WAIT_MS));
    out = names(s.port, "a.test", "b.test");
    assert_non_null(strstr(out, "b.test b.test b.test"));
    free(out);
    h_finish(&s, path);
    free(ca); free(ka); free(cb); free(kb);
    free(live_c); free(live_k); free(dir);
}

static int free_cert(void **state)
{
    (void)state;
    free(cert);
    free(key);
    return 0;
}

static char *serve_tls(struct h_server *s, const char *const *extra)
{
    const char *opts[16] = { "-l", "tls://127.0.0.1:0", "-l", "tcp://127.0.0.1:0",
                             "--tls-cert", cert, "--tls-key", key };
    int n = 8;
    for (int i = 0; extra && extra[i]; i++)
        opts[n++] = extra[i];
    return h_serve(s, info_lua, opts, NULL);
}

/* Python's ssl client: send `size` random bytes, read the line and the
 * echo; prints the line, then "ok" if the echo matched. */
static const char py_client[] =
    "import os, select, socket, ssl, sys\n"
    "port, size, sni = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]\n"
    "c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n"
    "s = c.wrap_socket(socket.create_connection(('127.0.0.1', port), timeout=10), server_hostname=sni)\n"
    "s.setblocking(False)\n"
    "data = os.urandom(size); sent = 0; buf = b''; line = None; got = b''\n"
    "while line is None or len(got) < size:\n"
    "    r, w, _ = select.select([s], [s] if sent < size else [], [], 10)\n"
    "    if not r and not w and not s.pending(): break\n"
    "    if w:\n"
    "        try: sent += s.send(data[sent:sent + 65536])\n"
    "        except (ssl.SSLWantReadError, ssl.SSLWantWriteError): pass\n"
    "    if r or s.pending():\n"
    "        try: d = s.recv(65536)\n"
    "        except (ssl.SSLWantReadError, ssl.SSLWantWriteError): continue\n"
    "        if not d: break\n"
    "        buf += d\n"
    "        if line is None and b'\\n' in buf: line, buf = buf.split(b'\\n', 1)\n"
    "        if line is not None: got, buf = got + buf, b''\n"
    "print((line or b'').decode()); print('ok' if got == data else 'mismatch %d' % len(got))\n";

static void py_echo(int port, int size, const char *sni, const char *want_line)
{
    char p[16], n[16];
    snprintf(p, sizeof p, "%d", port);
    snprintf(n, sizeof n, "%d", size);
    const char *argv[] = { "python3", "-c", py_client, p, n, sni, NULL };
    char *out;
    assert_int_equal(h_exec(argv, NULL, &out, 2 * H_WAIT_MS, true), 0);
    char want[256];
    snprintf(want, sizeof want, "%s\nok\n", want_line);
    assert_string_equal(out, want);
    free(out);
}

/* The TLS listener's port, the second one in the start-up line. */
static int tls_port(struct h_server *s) { return s->port; }

/* py_echo on a serve_tls server, whose line says the defaults: TLS 1.3,
 * its first cipher, and the name the client sent. */
static void echo_default(struct h_server *s, int size, const char *sni)
{
    char want[128];
    snprintf(want, sizeof want, "tls://127.0.0.1:%d TLSv1.3 TLS_AES_256_GCM_SHA384 %s",
             tls_port(s), sni);
    py_echo(tls_port(s), size, sni, want);
}

static int plain_port(struct h_server *s)
{
    const char *p = strstr(s->log, "listening on ");
    p = strstr(p, ", 127.0.0.1:");
    assert_non_null(p);
    return atoi(p + strlen(", 127.0.0.1:"));
}

static void test_python(void **state)
{
    (void)state;
    struct h_server s;
    char *path = serve_tls(&s, NULL);
    echo_default(&s, 1, "a.example");
    echo_default(&s, 4 << 20, "a.example"); /* past the high-water mark */
    h_finish(&s, path);
}

static void test_s_client_and_plain(void **state)
{
    (void)state;
    struct h_server s;
    char *path = serve_tls(&s, NULL);
    char target[32];
    snprintf(target, sizeof target, "127.0.0.1:%d", tls_port(&s));
    const char *argv[] = { "openssl", "s_client", "-quiet", "-connect", target,
                           "-servername", "b.example", "-tls1_2", NULL };
    char *out;
    assert_int_equal(h_exec(argv, "hello, bye\n", &out, H_WAIT_MS, false), 0);
    char want[160];
    snprintf(want, sizeof want, "tls://%s TLSv1.2 ECDHE-RSA-AES256-GCM-SHA384 b.example\nhello, bye\n",
             target);
    assert_string_equal(out, want);
    free(out);
    /* the plain listener beside it */
    int fd = h_connect(plain_port(&s), false);
    h_send_all(fd, "x", 1);
    snprintf(want, sizeof want, "tcp://127.0.0.1:%d plain", plain_port(&s));
    assert_string_equal(h_line(fd, H_WAIT_MS), want);
    close(fd);
    h_finish(&s, path);
}

/* Python that sets c (a client context that verifies nothing) and hello
 * (the ClientHello it would send), made in memory, never sent. */
#define PY_HELLO \
    "c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n" \
    "i, o = ssl.MemoryBIO(), ssl.MemoryBIO(); obj = c.wrap_bio(i, o, server_hostname='x')\n" \
    "try: obj.do_handshake()\n" \
    "except ssl.SSLWantReadError: pass\n" \
    "hello = o.read()\n"

/* A ClientHello sent a byte every 0.1 s: seconds from the first byte to
 * the server's close, or "open" after 5 s. */
static const char py_trickle[] =
    "import socket, ssl, sys, time\n"
    PY_HELLO
    "s = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); s.settimeout(0.1)\n"
    "t0 = time.time(); took = None\n"
    "for b in hello:\n"
    "    if time.time() - t0 > 5: break\n"
    "    try:\n"
    "        s.send(bytes([b]))\n"
    "        if s.recv(1) == b'': took = time.time() - t0; break\n"
    "    except socket.timeout: pass\n"
    "    except OSError: took = time.time() - t0; break\n"
    "print('open' if took is None else '%.1f' % took)\n";

/* Plaintext to a TLS port closes that connection, and nothing else; a
 * client that never says hello is dropped after the handshake timeout,
 * and so is one that trickles its hello: the timeout counts from the
 * start, not from the last byte. */
static void test_bad_peers(void **state)
{
    (void)state;
    struct h_server s;
    const char *extra[] = { "--tls-handshake-timeout", "0.5", NULL };
    char *path = serve_tls(&s, extra);
    int fd = h_connect(tls_port(&s), false);
    h_send_all(fd, "GET / HTTP/1.0\r\n\r\n", 18);
    assert_true(h_wait_closed(fd, H_WAIT_MS));
    close(fd);
    int silent = h_connect(tls_port(&s), false);
    assert_false(h_wait_closed(silent, 200));
    assert_true(h_wait_closed(silent, 3000));
    close(silent);
    char p[16];
    snprintf(p, sizeof p, "%d", tls_port(&s));
    const char *argv[] = { "python3", "-c", py_trickle, p, NULL };
    char *out;
    assert_int_equal(h_exec(argv, NULL, &out, H_WAIT_MS, true), 0);
    out[strcspn(out, "\n")] = '\0';
    double took = atof(out);
    if (took < 0.4 || took > 1.5)
        fail_msg("a trickled handshake closed after %s (the timeout is 0.5 s)", out);
    free(out);
    echo_default(&s, 1000, "c.example");
    h_finish(&s, path);
}

/* --tls-protocols, --tls-ciphers and --tls-alpn: what is agreed, and a
 * client below the protocols is refused. */
static void test_protocols_alpn(void **state)
{
    (void)state;
    struct h_server s;
    const char *extra[] = { "--tls-protocols", "TLSv1.2", "--tls-ciphers",
                            "ECDHE-RSA-AES128-GCM-SHA256", "--tls-alpn", "h2,http/1.1", NULL };
    char *path = serve_tls(&s, extra);
    char target[32];
    snprintf(target, sizeof target, "127.0.0.1:%d", tls_port(&s));
    const char *argv[] = { "openssl", "s_client", "-quiet", "-connect", target,
                           "-servername", "e.example", "-alpn", "http/1.1,h2", NULL };
    char *out;
    assert_int_equal(h_exec(argv, "hello, bye\n", &out, H_WAIT_MS, false), 0);
    char want[160];
    snprintf(want, sizeof want, "tls://%s TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256 e.example h2\n"
             "hello, bye\n", target);
    assert_string_equal(out, want);
    free(out);
    const char *tls13[] = { "openssl", "s_client", "-quiet", "-connect", target,
                            "-tls1_3", NULL };
    assert_int_not_equal(h_exec(tls13, "hello, bye\n", &out, H_WAIT_MS, true), 0);
    free(out);
    h_finish(&s, path);
    char *err;
    const char *bad[] = { "-l", "tls://127.0.0.1:0", "--tls-cert", cert, "--tls-key", key,
                          "--tls-protocols", "SSLv3", NULL };
    assert_int_equal(h_run(bad, &err), 1);
    assert_non_null(strstr(err, "--tls-protocols 'SSLv3'"));
    free(err);
}

/* A CA, and a certificate for localhost that it signed, valid only in
 * January 2020 (openssl req cannot date one in the past; openssl ca
 * can): their paths in *ca, *crt and *k. */
static void make_expired(char **ca, char **crt, char **k)
{
    char *dir = h_dirname(cert);
    char cakey[512], csr[512], cnf_text[1024];
    *ca = malloc(512), *crt = malloc(512), *k = malloc(512);
    snprintf(*ca, 512, "%s/ca.pem", dir);
    snprintf(*crt, 512, "%s/old.pem", dir);
    snprintf(*k, 512, "%s/old.key", dir);
    snprintf(cakey, sizeof cakey, "%s/ca.key", dir);
    snprintf(csr, sizeof csr, "%s/old.csr", dir);
    char *index = h_write_file(dir, "index.txt", "");
    snprintf(cnf_text, sizeof cnf_text,
             "[ca]\ndefault_ca = d\n[d]\ndatabase = %s\nnew_certs_dir = %s\n"
             "serial = %s/serial\ndefault_md = sha256\npolicy = p\n"
             "[p]\ncommonName = supplied\n", index, dir, dir);
    char *cnf = h_write_file(dir, "ca.cnf", cnf_text);
    const char *mkca[] = { "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                           "ec_paramgen_curve:P-256", "-nodes", "-keyout", cakey, "-out", *ca,
                           "-days", "2", "-subj", "/CN=moonring test CA", NULL };
    const char *mkcsr[] = { "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-keyout", *k, "-out", csr,
                            "-subj", "/CN=localhost", NULL };
    const char *sign[] = { "openssl", "ca", "-batch", "-config", cnf, "-cert", *ca, "-keyfile",
                           cakey, "-in", csr, "-out", *crt, "-notext", "-rand_serial",
                           "-startdate", "20200101000000Z", "-enddate", "20200201000000Z",
                           NULL };
    const char *const *steps[] = { mkca, mkcsr, sign };
    for (size_t i = 0; i < 3; i++) {
        char *out;
        assert_int_equal(h_exec(steps[i], NULL, &out, H_WAIT_MS, true), 0);
        free(out);
    }
    free(index);
    free(cnf);
    free(dir);
}

/* mr.tcp(..., { tls = true }): to a TLS backend (a moonring of the
 * test's own), verified against the system's store, a CA file and a
 * name, and to one whose certificate has expired, against its CA and
 * against a CA that did not sign it; the pool keeps TLS connections by
 * their options. */
static const char client_lua[] =
    "local mr = require 'moonring'\n"
    "return function(sock)\n"
    "  local port, ca = tonumber(arg[1]), arg[2]\n"
    "  for line in function() return sock:receive('*l') end do\n"
    "    local o = { tls = true }\n"
    "    if line == 'noverify' then o.verify = false\n"
    "    elseif line == 'ca' then o.ca = ca; o.server_name = 'localhost'\n"
    "    elseif line == 'wrongname' then o.ca = ca; o.server_name = 'example.org' end\n"
    "    local to = port\n"
    "    if line == 'expired' then to = tonumber(arg[3]); o.ca = arg[4]\n"
    "    elseif line == 'otherca' then to = tonumber(arg[3]); o.ca = ca end\n"
    "    local up, err = mr.tcp('127.0.0.1', to, o)\n"
    "    if not up then sock:send('error: ', err, '\\n')\n"
    "    else\n"
    "      up:send('x\\n')\n"
    "      local l\n"
    "      repeat l = up:receive('*l') until l == 'x' or not l\n"
    "      local t = up:tls()\n"
    "      sock:send(l and 'ok' or 'lost', ' ', t.version, ' ', up:getreusedtimes(), '\\n')\n"
    "      up:setkeepalive()\n"
    "    end\n"
    "  end\n"
    "end\n";

static void test_client(void **state)
{
    (void)state;
    struct h_server back, old, front;
    char *bpath = serve_tls(&back, NULL);
    char *ca, *oc, *ok;
    make_expired(&ca, &oc, &ok);
    const char *oopts[] = { "-l", "tls://127.0.0.1:0", "--tls-cert", oc, "--tls-key", ok, NULL };
    char *opath = h_serve(&old, info_lua, oopts, NULL);
    char bport[16], oport[16];
    snprintf(bport, sizeof bport, "%d", tls_port(&back));
    snprintf(oport, sizeof oport, "%d", old.port);
    const char *args[] = { bport, cert, oport, ca, NULL };
    char *fpath = h_serve(&front, client_lua, NULL, args);
    int fd = h_connect(front.port, false);
    static const struct { const char *ask, *want; } cases[] = {
        { "noverify", "ok TLSv1.3 0" },
        { "system", "error: certificate verify failed: self-signed certificate" },
        { "ca", "ok TLSv1.3 0" },
        { "wrongname", "error: certificate verify failed: hostname mismatch" },
        { "expired", "error: certificate verify failed: certificate has expired" },
        { "otherca", "error: certificate verify failed: unable to get local issuer certificate" },
        { "noverify", "ok TLSv1.3 1" }, /* from the pool */
        { "ca", "ok TLSv1.3 1" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        h_send_all(fd, cases[i].ask, strlen(cases[i].ask));
        h_send_all(fd, "\n", 1);
        assert_string_equal(h_line(fd, H_WAIT_MS), cases[i].want);
    }
    close(fd);
    h_finish(&front, fpath);
    h_finish(&old, opath);
    h_finish(&back, bpath);
    free(ca); free(oc); free(ok);
}

/* mr.connect(host, port, handlers, { tls = true }): a callback
 * connection to a TLS backend; a failed verification reaches on_close. */
static const char connect_lua[] =
    "local mr = require 'moonring'\n"
    "return { on_data = function(conn, data)\n"
    "  local o = { tls = true, verify = data:match('verify') == nil }\n"
    "  mr.connect('127.0.0.1', tonumber(arg[1]), {\n"
    "    on_open = function(up) up:send('x\\n') end,\n"
    "    on_data = function(up, d)\n"
    "      conn:send((d:match('^[^\\n]*')), ' ', up:tls().version, '\\n'); up:close()\n"
    "    end,\n"
    "    on_close = function(up, why, err) if err then conn:send('error: ', err, '\\n') end end,\n"
    "  }, o)\n"
    "end }\n";

static void test_connect(void **state)
{
    (void)state;
    struct h_server back, front;
    char *bpath = serve_tls(&back, NULL);
    char bport[16];
    snprintf(bport, sizeof bport, "%d", tls_port(&back));
    const char *args[] = { bport, NULL };
    char *fpath = h_serve(&front, connect_lua, NULL, args);
    int fd = h_connect(front.port, false);
    h_send_all(fd, "noverify", 8);
    char want[128];
    snprintf(want, sizeof want, "tls://127.0.0.1:%s TLSv1.3 TLS_AES_256_GCM_SHA384 nil TLSv1.3",
             bport);
    assert_string_equal(h_line(fd, H_WAIT_MS), want);
    h_send_all(fd, "check", 5);
    assert_string_equal(h_line(fd, H_WAIT_MS),
                        "error: certificate verify failed: self-signed certificate");
    close(fd);
    h_finish(&front, fpath);
    h_finish(&back, bpath);
}

/* curl --cacert against examples/http.lua on a tls:// listener beside a
 * plain one. */
static void test_curl(void **state)
{
    (void)state;
    char *ca, *ka;
    make_named("localhost", &ca, &ka);
    const char *opts[] = { "-l", "tls://127.0.0.1:0", "-l", "tcp://127.0.0.1:0",
                           "--tls-cert", ca, "--tls-key", ka, NULL };
    struct h_server s;
    const char *argv[16];
    int n = 0;
    for (; opts[n]; n++)
        argv[n] = opts[n];
    argv[n++] = "examples/http.lua";
    argv[n] = NULL;
    h_start(&s, argv);
    char url[64], resolve[64];
    snprintf(url, sizeof url, "https://localhost:%d/", s.port);
    snprintf(resolve, sizeof resolve, "localhost:%d:127.0.0.1", s.port);
    const char *c1[] = { "curl", "-s", "--cacert", ca, "--resolve", resolve, url, NULL };
    char *out;
    assert_int_equal(h_exec(c1, NULL, &out, H_WAIT_MS, false), 0);
    assert_string_equal(out, "hello from moonring\n");
    free(out);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", plain_port(&s));
    const char *c2[] = { "curl", "-s", url, NULL };
    assert_int_equal(h_exec(c2, NULL, &out, H_WAIT_MS, false), 0);
    assert_string_equal(out, "hello from moonring\n");
    free(out);
    h_finish(&s, NULL);
    free(ca); free(ka);
}

/* Random bytes, a handshake that stops halfway, a peer gone without a
 * close_notify, a record cut short, and 1,000 handshakes left open: each
 * closes alone (the open ones by the handshake timeout), each open one
 * holds no more than OpenSSL's buffers for a handshake under way (about
 * 47 KiB, as in nginx), and the server serves on. */
static const char py_bad[] =
    "import os, resource, socket, ssl, sys, time\n"
    "port = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (2048, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
    "def rss():\n"
    "    for l in open('/proc/%s/status' % sys.argv[2]):\n"
    "        if l.startswith('VmRSS:'): return int(l.split()[1])\n"
    "before = rss()\n"
    "def raw(data):\n"
    "    s = socket.create_connection(('127.0.0.1', port), timeout=5); s.sendall(data)\n"
    "    try: r = s.recv(100)\n"
    "    except (ConnectionResetError, socket.timeout): r = b''\n"
    "    return s\n"
    "raw(os.urandom(2000)).close()\n"
    PY_HELLO
    "half = socket.create_connection(('127.0.0.1', port)); half.sendall(hello[:len(hello) // 2])\n"
    "s = c.wrap_socket(socket.create_connection(('127.0.0.1', port)), server_hostname='x')\n"
    "s.sendall(b'x'); s.recv(100); s.close()  # no close_notify: the socket just goes\n"
    "t = socket.create_connection(('127.0.0.1', port)); i, o = ssl.MemoryBIO(), ssl.MemoryBIO()\n"
    "obj = c.wrap_bio(i, o, server_hostname='x')\n"
    "while True:\n"
    "    try: obj.do_handshake(); break\n"
    "    except ssl.SSLWantReadError: t.sendall(o.read()); i.write(t.recv(65536))\n"
    "t.sendall(o.read()); obj.write(b'x' * 1000); rec = o.read()\n"
    "t.sendall(rec[:len(rec) // 2]); t.close()  # a record cut short\n"
    "opened = [socket.create_connection(('127.0.0.1', port)) for _ in range(1000)]\n"
    "for x in opened: x.sendall(hello[:len(hello) // 2])\n"
    "time.sleep(0.3); per = (rss() - before) / 1000\n"
    "closed = 0\n"
    "deadline = time.time() + 5\n"
    "for x in opened + [half]:\n"
    "    x.settimeout(max(0.1, deadline - time.time()))\n"
    "    try: closed += x.recv(1) == b''\n"
    "    except (ConnectionResetError, socket.timeout): pass\n"
    "print(closed, 'bounded' if per < float(sys.argv[3]) else '%.1f KiB each' % per)\n";

static void test_bad_input(void **state)
{
    (void)state;
    struct h_server s;
    const char *extra[] = { "--tls-handshake-timeout", "2", NULL };
    char *path = serve_tls(&s, extra);
    char p[16];
    snprintf(p, sizeof p, "%d", tls_port(&s));
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)s.pid);
#ifdef __SANITIZE_ADDRESS__
    const char *bound = "96"; /* ASan's red zones: 71 KiB each measured */
#else
    const char *bound = "64";
#endif
    const char *argv[] = { "python3", "-c", py_bad, p, pid, bound, NULL };
    char *out;
    assert_int_equal(h_exec(argv, NULL, &out, 2 * H_WAIT_MS, true), 0);
    assert_string_equal(out, "1001 bounded\n"); /* the 1,000 and the half handshake */
    free(out);
    echo_default(&s, 1000, "f.example");
    h_finish(&s, path);
}

/* A client that asks to renegotiate (TLS 1.2) is refused with an alert,
 * as nginx does; the server serves on. */
static void test_renegotiation(void **state)
{
    (void)state;
    struct h_server s;
    char *path = serve_tls(&s, NULL);
    char target[32];
    snprintf(target, sizeof target, "127.0.0.1:%d", tls_port(&s));
    /* without -quiet, an "R" line asks s_client to renegotiate */
    static const char script[] =
        "(printf 'R\\n'; sleep 1; printf 'hello, bye\\n'; sleep 1) | "
        "openssl s_client -tls1_2 -connect \"$0\" 2>&1";
    const char *argv[] = { "sh", "-c", script, target, NULL };
    char *out;
    h_exec(argv, NULL, &out, H_WAIT_MS, true);
    assert_non_null(strstr(out, "RENEGOTIATING"));
    assert_non_null(strstr(out, "no renegotiation"));
    free(out);
    echo_default(&s, 1000, "g.example");
    h_finish(&s, path);
}

/* Each worker inherits the certificate. */
static void test_workers(void **state)
{
    (void)state;
    struct h_server s;
    const char *extra[] = { "-w", "2", NULL };
    char *path = serve_tls(&s, extra);
    for (int i = 0; i < 6; i++)
        echo_default(&s, 100, "d.example");
    h_finish(&s, path);
}

/* A certificate that cannot be loaded stops the start with one line. */
static void test_bad_certificate(void **state)
{
    (void)state;
    char *err;
    const char *missing[] = { "-l", "tls://127.0.0.1:0", "--tls-cert", "/nonexistent.pem",
                              "--tls-key", key, NULL };
    assert_int_equal(h_run(missing, &err), 1);
    assert_non_null(strstr(err, "--tls-cert /nonexistent.pem"));
    free(err);
    const char *swapped[] = { "-l", "tls://127.0.0.1:0", "--tls-cert", key,
                              "--tls-key", cert, NULL };
    assert_int_equal(h_run(swapped, &err), 1);
    assert_non_null(strstr(err, "--tls-cert"));
    free(err);
    const char *none[] = { "-l", "tls://127.0.0.1:0", NULL };
    assert_int_equal(h_run(none, &err), 2);
    assert_non_null(strstr(err, "needs --tls-cert and --tls-key"));
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_python),
        cmocka_unit_test(test_s_client_and_plain),
        cmocka_unit_test(test_bad_peers),
        cmocka_unit_test(test_protocols_alpn),
        cmocka_unit_test(test_client),
        cmocka_unit_test(test_connect),
        cmocka_unit_test(test_sni_tickets),
        cmocka_unit_test(test_reload),
        cmocka_unit_test(test_curl),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_renegotiation),
        cmocka_unit_test(test_workers),
        cmocka_unit_test(test_bad_certificate),
    };
    return cmocka_run_group_tests(tests, make_cert, free_cert);
}
