/* test_testssl.c - testssl.sh (Debian's package) against examples/http.lua
 * on a tls:// listener: no finding rated HIGH or CRITICAL.
 *
 * Skipped when testssl is not installed. In make test it runs testssl's
 * quicker scan (--fast, no client simulation, about a minute); make
 * testssl installs it and runs the whole default scan (MOONRING_TESTSSL=
 * full, about three minutes). The certificate is made here: a CA of the
 * test's own, given to testssl with --add-ca, and a leaf for localhost
 * and 127.0.0.1 with the fields testssl asks of a certificate, so that
 * what it rates is the server, not a test certificate. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#define SCAN_MS (10 * 60 * 1000)

/* Counts the findings by severity, then names each HIGH or CRITICAL. */
static const char py_summary[] =
    "import json, sys\n"
    "d = json.load(open(sys.argv[1]))\n"
    "n = {s: 0 for s in ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'OK', 'INFO', 'WARN')}\n"
    "for x in d: n[x['severity']] = n.get(x['severity'], 0) + 1\n"
    "print(' '.join('%s %d' % (s.lower(), c) for s, c in n.items()))\n"
    "for x in d:\n"
    "    if x['severity'] in ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW'):\n"
    "        print('  %s %s: %s' % (x['severity'], x['id'], x['finding']))\n";

static void run(const char *const *argv)
{
    char *out;
    int rc = h_exec(argv, NULL, &out, SCAN_MS, true);
    if (rc != 0)
        fail_msg("%s exited with %d: %s", argv[0], rc, out);
    free(out);
}

/* A CA, and a certificate it signed for localhost: their paths. */
static void make_certs(const char *dir, char *ca, char *crt, char *key, size_t len)
{
    char cakey[512], csr[512];
    snprintf(ca, len, "%s/ca.pem", dir);
    snprintf(crt, len, "%s/site.pem", dir);
    snprintf(key, len, "%s/site.key", dir);
    snprintf(cakey, sizeof cakey, "%s/ca.key", dir);
    snprintf(csr, sizeof csr, "%s/site.csr", dir);
    char *ext = h_write_file(dir, "ext.cnf",
                             "subjectAltName = DNS:localhost, IP:127.0.0.1\n"
                             "keyUsage = critical, digitalSignature\n"
                             "extendedKeyUsage = serverAuth\n"
                             "crlDistributionPoints = URI:http://crl.invalid/ca.crl\n"
                             "authorityInfoAccess = OCSP;URI:http://ocsp.invalid/\n");
    const char *mkca[] = { "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                           "ec_paramgen_curve:P-256", "-nodes", "-keyout", cakey, "-out", ca,
                           "-days", "365", "-subj", "/CN=moonring test CA", NULL };
    const char *mkcsr[] = { "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
                            "-subj", "/CN=localhost", NULL };
    const char *sign[] = { "openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", cakey,
                           "-CAcreateserial", "-days", "365", "-extfile", ext, "-out", crt,
                           NULL };
    run(mkca);
    run(mkcsr);
    run(sign);
    free(ext);
}

static void test_testssl(void **state)
{
    (void)state;
    const char *probe[] = { "testssl", "--version", NULL };
    char *out;
    if (h_exec(probe, NULL, &out, H_WAIT_MS, true) != 0) {
        free(out);
        print_message("testssl is not installed: skipped (make testssl installs it)\n");
        skip();
    }
    free(out);
    char *placeholder = h_write_file(NULL, "report.json", "");
    char *dir = h_dirname(placeholder);
    char ca[512], crt[512], key[512], target[64];
    make_certs(dir, ca, crt, key, sizeof ca);
    const char *argv[] = { "-l", "tls://127.0.0.1:0", "--tls-cert", crt, "--tls-key", key,
                           "examples/http.lua", NULL };
    struct h_server s;
    h_start(&s, argv);
    snprintf(target, sizeof target, "127.0.0.1:%d", s.port);
    const char *env = getenv("MOONRING_TESTSSL");
    bool full = env && strcmp(env, "full") == 0;
    unlink(placeholder); /* testssl will not write over a file */
    const char *quick[] = { "testssl", "--quiet", "--color", "0", "--warnings", "off",
                            "--nodns", "none", "--add-ca", ca, "--jsonfile", placeholder,
                            "--fast", "-p", "-s", "-f", "-P", "-S", "-U", "-h", target, NULL };
    const char *whole[] = { "testssl", "--quiet", "--color", "0", "--warnings", "off",
                            "--nodns", "none", "--add-ca", ca, "--jsonfile", placeholder,
                            target, NULL };
    /* testssl is a shell script of hundreds of processes; once in a
     * few dozen scans it stopped halfway with status 1 and no message
     * (a scan against the same server just after passed). Once more
     * then, and a second such stop fails the test. */
    for (int tries = 1;; tries++) {
        int rc = h_exec(full ? whole : quick, NULL, &out, SCAN_MS, true);
        if (rc == 0)
            break;
        if (tries == 2)
            fail_msg("testssl exited with %d twice; the second time: %s", rc, out);
        print_message("testssl exited with %d halfway; once more\n", rc);
        free(out);
        unlink(placeholder);
    }
    free(out);
    const char *sum[] = { "python3", "-c", py_summary, placeholder, NULL };
    assert_int_equal(h_exec(sum, NULL, &out, H_WAIT_MS, true), 0);
    print_message("testssl (%s scan): %s", full ? "whole" : "quick", out);
    if (strstr(out, "critical 0 high 0 ") != out)
        fail_msg("testssl rated findings HIGH or CRITICAL");
    free(out);
    h_finish(&s, NULL);
    free(placeholder);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_testssl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
