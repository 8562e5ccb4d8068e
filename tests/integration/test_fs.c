/* test_fs.c - mr.fs: files through the ring, for connection functions;
 * its errors, write_file's atomicity, `beneath`, linear reads, the fd
 * limit, and sock:send_file. Each test names a Lua case on its
 * connection's first line; the case answers one line, which the test
 * compares. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

static char *dir; /* a fresh directory per test */

static const char cases_lua[] =
    "local mr = require 'moonring'\n"
    "local fs = mr.fs\n"
    "local dir = arg[1]\n"
    "local T = {}\n"
    "local function j(...) local t = table.pack and table.pack(...) or {n = select('#', ...), ...}\n"
    "  for i = 1, t.n do t[i] = tostring(t[i]) end return table.concat(t, ',', 1, t.n) end\n"
    "T.read = function()\n"
    "  assert(fs.write_file(dir .. '/r.txt', 'hello world'))\n"
    "  local f = assert(fs.open(dir .. '/r.txt'))\n"
    "  local a, b, c, d = f:read(5), f:read(3), f:read(100), f:read(10)\n"
    "  local e, g, h = f:read(5, 6), f:read(100, 11), f:read(2, 0)\n"
    "  local i = f:read(0)\n"
    "  return j(a, b, c, d == '', e, g == '', h, i == '', f:close())\n"
    "end\n"
    "T.write = function()\n"
    "  local p = dir .. '/w.txt'\n"
    "  local f = assert(fs.open(p, 'w+'))\n"
    "  local r = j(f:write('abc'), f:write('def'), f:write('XY', 1), f:sync(), f:read(100, 0))\n"
    "  local st = f:stat()\n"
    "  f:close()\n"
    "  local a = assert(fs.open(p, 'ab'))\n"
    "  r = r .. '|' .. j(a:write('zz'), a:write('!', 0)) a:close()\n"
    "  local rp = assert(fs.open(p, 'r+'))\n"
    "  r = r .. '|' .. j(rp:write('Q'), rp:read(3)) rp:close()\n"
    "  local w = assert(fs.open(p, 'a+'))\n"
    "  r = r .. '|' .. j(w:write('+'), w:read(100, 0)) w:close()\n"
    "  local big = string.rep('0123456789', 300000)\n"
    "  local b = assert(fs.open(dir .. '/big', 'w'))\n"
    "  r = r .. '|' .. j(b:write(big), b:stat().size) b:close()\n"
    "  return r .. '|' .. j(st.size, st.type, st.mode, st.mtime > 1e9, st.ino > 0,\n"
    "                       fs.read_file(p), fs.read_file(dir .. '/big') == big)\n"
    "end\n"
    "T.errors = function()\n"
    "  local f = assert(fs.open(dir .. '/e.txt', 'w'))\n"
    "  f:close()\n"
    "  local function e(...) return select(2, ...) end\n"
    "  local closed = j(e(f:read(1)), e(f:write('x')), e(f:sync()), e(f:stat()), e(f:close()), tostring(f))\n"
    "  local wr = assert(fs.open(dir .. '/e.txt', 'r'))\n"
    "  local ro = j(wr:write('x')) wr:close()\n"
    "  local d = assert(fs.open(dir))\n"
    "  local isdir = j(d:read(10)) d:close()\n"
    "  assert(fs.mkdir(dir .. '/full'))\n"
    "  assert(fs.write_file(dir .. '/full/x', 'x'))\n"
    "  return j(fs.open(dir .. '/missing')) .. '|' .. j(fs.stat(dir .. '/missing')) .. '|' ..\n"
    "         j(fs.read_file(dir .. '/missing')) .. '|' .. j(fs.read_file(dir)) .. '|' ..\n"
    "         isdir .. '|' .. closed .. '|' .. ro .. '|' .. j(fs.mkdir(dir .. '/full')) .. '|' ..\n"
    "         j(fs.remove(dir .. '/full')) .. '|' .. j(fs.rename(dir .. '/missing', dir .. '/x')) ..\n"
    "         '|' .. j(fs.list(dir .. '/missing')) .. '|' .. j(fs.list(dir .. '/e.txt')) .. '|' ..\n"
    "         j(pcall(fs.open, dir .. '/e.txt', 'rw')) .. '|' .. j(pcall(fs.open)) .. '|' ..\n"
    "         j(fs.write_file(dir .. '/missing/x', 'y'))\n"
    "end\n"
    "T.paths = function()\n"
    "  local r = j(fs.mkdir(dir .. '/d1'), fs.mkdir(dir .. '/d2', tonumber('700', 8)))\n"
    "  r = r .. '|' .. j(fs.stat(dir .. '/d2').mode == tonumber('700', 8), fs.stat(dir .. '/d1').type)\n"
    "  assert(fs.write_file(dir .. '/d1/a', '1'))\n"
    "  assert(fs.write_file(dir .. '/d1/b', '22'))\n"
    "  local l = fs.list(dir .. '/d1') table.sort(l)\n"
    "  r = r .. '|' .. table.concat(l, ' ') .. '|' .. #fs.list(dir .. '/d2')\n"
    "  r = r .. '|' .. j(fs.rename(dir .. '/d1/a', dir .. '/d2/c'), fs.read_file(dir .. '/d2/c'))\n"
    "  r = r .. '|' .. j(fs.remove(dir .. '/d1/b'), fs.remove(dir .. '/d1'), fs.stat(dir .. '/d1'))\n"
    "  local many = dir .. '/many'\n"
    "  fs.mkdir(many)\n"
    "  for i = 1, 2000 do local f = assert(fs.open(many .. '/' .. i .. string.rep('n', 60), 'w')) f:close() end\n"
    "  r = r .. '|' .. #fs.list(many)\n"
    "  local lst = fs.lstat('/proc/self')\n"
    "  return r .. '|' .. j(lst.type, fs.stat('/proc/self').type, fs.stat('/dev/null').type)\n"
    "end\n"
    "T.beneath = function()\n"
    "  local root = dir .. '/root'\n"
    "  return j(fs.open('in.txt', 'r', { beneath = root }) ~= nil,\n"
    "           fs.open('sub/../in.txt', 'r', { beneath = root }) ~= nil,\n"
    "           fs.open('inward', 'r', { beneath = root }) ~= nil) .. '|' ..\n"
    "         j(fs.open('../secret.txt', 'r', { beneath = root })) .. '|' ..\n"
    "         j(fs.open('sub/../../secret.txt', 'r', { beneath = root })) .. '|' ..\n"
    "         j(fs.open(dir .. '/secret.txt', 'r', { beneath = root })) .. '|' ..\n"
    "         j(fs.open('outward', 'r', { beneath = root })) .. '|' ..\n"
    "         j(fs.open('new.txt', 'w', { beneath = root }) ~= nil) .. '|' ..\n"
    "         j(fs.open('in.txt', 'r', { beneath = dir .. '/nodir' })) .. '|' ..\n"
    "         j(fs.open('missing', 'r', { beneath = root }))\n"
    "end\n"
    "T.atomic = function(sock)\n"
    "  local a, b = string.rep('a', 1048576), string.rep('b', 1048576)\n"
    "  local n = 0\n"
    "  local t0 = mr.now()\n"
    "  while mr.now() - t0 < 1.0 do\n"
    "    assert(fs.write_file(dir .. '/atomic', n % 2 == 0 and a or b))\n"
    "    n = n + 1\n"
    "  end\n"
    "  return 'wrote ' .. (n > 4 and 'many' or tostring(n)) .. ' ' .. #fs.list(dir)\n"
    "end\n"
    "local function time_read(path, chunk)\n"
    "  local f = assert(fs.open(path))\n"
    "  local t0, total = mr.now(), 0\n"
    "  while true do\n"
    "    local s = assert(f:read(chunk))\n"
    "    if s == '' then break end\n"
    "    total = total + #s\n"
    "  end\n"
    "  f:close()\n"
    "  return mr.now() - t0, total\n"
    "end\n"
    "T.linear = function()\n"
    "  local t1, n1 = time_read(dir .. '/s128', 1048576)\n"
    "  local t2, n2 = time_read(dir .. '/s1g', 1048576)\n"
    "  local t0 = mr.now()\n"
    "  local s = fs.read_file(dir .. '/s128')\n"
    "  local t3 = mr.now() - t0\n"
    "  io.stderr:write(('linear: 128 MiB %.3f s, 1 GiB %.3f s (ratio %.1f); '\n"
    "    .. 'read_file 128 MiB %.3f s\\n'):format(t1, t2, t2 / t1, t3))\n"
    "  return j(n1, n2, #s, t2 / t1 < 16)\n"
    "end\n"
    "T.limit = function()\n"
    "  local files, err = {}\n"
    "  for i = 1, 100 do\n"
    "    local f, e = fs.open(dir .. '/lim', 'w')\n"
    "    if not f then err = e break end\n"
    "    files[#files + 1] = f\n"
    "  end\n"
    "  local n = #files\n"
    "  local rf = j(fs.read_file(dir .. '/lim'))\n"
    "  for _, f in ipairs(files) do f:close() end\n"
    "  local again = fs.open(dir .. '/lim') ~= nil\n"
    "  files = nil\n"
    "  for i = 1, 300 do assert(fs.open(dir .. '/lim')) if i % 4 == 0 then collectgarbage() end end\n"
    "  collectgarbage()\n"
    "  return j(n, err, rf, again, fs.open(dir .. '/lim') ~= nil)\n"
    "end\n"
    "return function(sock)\n"
    "  local name = sock:receive('*l')\n"
    "  local ok, res = pcall(T[name], sock)\n"
    "  sock:send(ok and tostring(res) or ('error: ' .. tostring(res)), '\\n')\n"
    "end\n";

static int mk_dir(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/mr-fs-XXXXXX";
    if (!mkdtemp(tmpl))
        return -1;
    dir = strdup(tmpl);
    return 0;
}

static char *saved_bin; /* MOONRING_BIN, while a test replaces it */

static int rm_dir(void **state)
{
    (void)state;
    if (saved_bin) {
        setenv("MOONRING_BIN", saved_bin, 1);
        free(saved_bin);
        saved_bin = NULL;
    }
    chmod(dir, 0700);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    int rc = system(cmd);
    free(dir);
    dir = NULL;
    return rc == 0 ? 0 : -1;
}

static char *path_in(const char *name)
{
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

/* Run case `name` on a server started with opts; compare its line. */
static void run_case_opts(const char *name, const char *want,
                          const char *const *opts)
{
    struct h_server s;
    const char *args[] = { dir, NULL };
    char *path = h_serve(&s, cases_lua, opts, args);
    int fd = h_connect(s.port, false);
    h_send_all(fd, name, strlen(name));
    h_send_all(fd, "\n", 1);
    char *got = h_line(fd, 3 * H_WAIT_MS);
    if (strcmp(got, want))
        fail_msg("case %s: got\n  '%s', wanted\n  '%s'", name, got, want);
    close(fd);
    h_log_wait(&s, NULL, 0);
    if (s.log && strstr(s.log, "linear:"))
        fprintf(stderr, "%s", strstr(s.log, "linear:"));
    h_finish(&s, path);
}

static void run_case(const char *name, const char *want)
{
    run_case_opts(name, want, NULL);
}

/* Reads by count, at the position and at offsets; "" at the end. */
static void test_read(void **state)
{
    (void)state;
    run_case("read", "hello, wo,rld,true,world,true,he,true,true");
}

/* Every mode, writes at the position and at offsets, sync, stat, a
 * write of 3 MB in one call. */
static void test_write(void **state)
{
    (void)state;
    run_case("write", "3,3,2,true,aXYdef|2,1|1,XYd|1,QXYdefzz!+|3000000,3000000|"
                      "6,file,420,true,true,QXYdefzz!+,true");
}

/* The errors: system messages, "closed" on a closed file, misuse raises. */
static void test_errors(void **state)
{
    (void)state;
    run_case("errors",
             "nil,No such file or directory|nil,No such file or directory|"
             "nil,No such file or directory|nil,Is a directory|"
             "nil,Is a directory|closed,closed,closed,closed,closed,file (closed)|nil,Bad file descriptor|nil,File exists|"
             "nil,Directory not empty|nil,No such file or directory|"
             "nil,No such file or directory|nil,Not a directory|"
             "false,bad argument #2 to '?' (\"r\", \"w\", \"a\", \"r+\", \"w+\" or \"a+\" expected)|"
             "false,bad argument #1 to '?' (string expected, got no value)|"
             "nil,No such file or directory");
}

/* mkdir with a mode, list (2,000 names: beyond one getdents64 batch),
 * rename, remove of a file and of a directory, stat and lstat. */
static void test_paths(void **state)
{
    (void)state;
    run_case("paths", "true,true|true,dir|a b|0|true,1|true,true,nil,"
                      "No such file or directory|2000|link,dir,other");
}

/* A file mode 000: EACCES, for a server that is not root (when the test
 * runs as root, the server drops to nobody by setpriv). */
static const char perm_lua[] =
    "local fs = require('moonring').fs\n"
    "return function(sock)\n"
    "  local p = sock:receive('*l')\n"
    "  local a, e = fs.open(p)\n"
    "  local b, e2 = fs.read_file(p)\n"
    "  local c, e3 = fs.open(p .. '.new', 'w')\n"
    "  sock:send(tostring(a), ',', e, ',', tostring(b), ',', e2, ',', tostring(c), ',', e3, '\\n')\n"
    "end\n";

static void test_permission(void **state)
{
    (void)state;
    char *p = path_in("locked");
    int fd = open(p, O_CREAT | O_WRONLY, 0);
    assert_true(fd >= 0);
    close(fd);
    char *script = h_write_file(dir, "app.lua", perm_lua);
    if (geteuid() == 0) {
        const char *orig = getenv("MOONRING_BIN") ? getenv("MOONRING_BIN") : "./moonring";
        char real[4096];
        assert_non_null(realpath(orig, real));
        saved_bin = strdup(orig);
        char *wrapper = path_in("as-nobody.sh");
        FILE *w = fopen(wrapper, "w");
        fprintf(w, "#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups "
                   "'%s' \"$@\"\n", real);
        fclose(w);
        chmod(wrapper, 0755);
        setenv("MOONRING_BIN", wrapper, 1);
        free(wrapper);
    }
    chmod(dir, 0555); /* nobody may create files here */
    struct h_server s;
    const char *argv[] = { "--no-reload", script, NULL };
    h_start(&s, argv);
    int c = h_connect(s.port, false);
    h_send_all(c, p, strlen(p));
    h_send_all(c, "\n", 1);
    char *got = h_line(c, H_WAIT_MS);
    close(c);
    h_finish(&s, script);
    assert_string_equal(got, "nil,Permission denied,nil,Permission denied,nil,"
                             "Permission denied");
    free(p);
}

/* Calls that wait raise, and say what to do, outside a coroutine:
 * in a handler table's callback, and at load time. */
static const char outside_lua[] =
    "local mr = require 'moonring'\n"
    "local _, at_load = pcall(mr.fs.stat, '/')\n"
    "return { on_data = function(conn, data)\n"
    "  local _, e1 = pcall(mr.fs.open, '/')\n"
    "  local _, e2 = pcall(mr.fs.read_file, '/etc/hostname')\n"
    "  conn:send(at_load, '\\n', e1, '\\n', e2, '\\n')\n"
    "end }\n";

static void test_outside_coroutine(void **state)
{
    (void)state;
    struct h_server s;
    char *path = h_serve(&s, outside_lua, NULL, NULL);
    int fd = h_connect(s.port, false);
    h_send_all(fd, "x", 1);
    char *l1 = strdup(h_line(fd, H_WAIT_MS));
    char *l2 = strdup(h_line(fd, H_WAIT_MS));
    char *l3 = strdup(h_line(fd, H_WAIT_MS));
    close(fd);
    h_finish(&s, path);
    assert_non_null(strstr(l1, "mr.fs.stat works once the server runs: at load time, wrap the code in mr.spawn"));
    assert_non_null(strstr(l2, "mr.fs.open waits, and works only in a coroutine that moonring runs"));
    assert_non_null(strstr(l3, "mr.fs.read_file waits, and works only in a coroutine"));
    free(l1), free(l2), free(l3);
}

/* `beneath` keeps resolution inside its directory: "..", an absolute
 * path and a symlink that leave it fail with the system's message. */
static void test_beneath(void **state)
{
    (void)state;
    char *root = path_in("root");
    char *sub = path_in("root/sub");
    mkdir(root, 0755);
    mkdir(sub, 0755);
    free(h_write_file(root, "in.txt", "in"));
    free(h_write_file(dir, "secret.txt", "secret"));
    char *out = path_in("root/outward"), *in = path_in("root/inward");
    char *target = path_in("secret.txt");
    assert_int_equal(symlink(target, out), 0);
    assert_int_equal(symlink("in.txt", in), 0);
    run_case("beneath", "true,true,true|nil,Invalid cross-device link|"
                        "nil,Invalid cross-device link|nil,Invalid cross-device link|"
                        "nil,Invalid cross-device link|true|nil,No such file or directory|"
                        "nil,No such file or directory");
    free(root), free(sub), free(out), free(in), free(target);
}

/* While the server replaces a 1 MiB file over and over, every read of
 * it sees all of the old content or all of the new, never a mix, and
 * no temporary file stays behind. */
static void test_write_file_atomic(void **state)
{
    (void)state;
    struct h_server s;
    const char *args[] = { dir, NULL };
    char *path = h_serve(&s, cases_lua, NULL, args);
    char *p = path_in("atomic");
    int fd = h_connect(s.port, false);
    h_send_all(fd, "atomic\n", 7);
    static char buf[2 << 20];
    int reads = 0, seen_a = 0, seen_b = 0;
    char *got = NULL;
    for (int i = 0; i < 20000; i++) {
        int f = open(p, O_RDONLY);
        if (f >= 0) {
            ssize_t n = 0, r;
            while ((r = read(f, buf + n, sizeof buf - (size_t)n)) > 0)
                n += r;
            close(f);
            if (n != 1048576)
                fail_msg("read %zd bytes, not 1048576", n);
            char c = buf[0];
            for (ssize_t k = 1; k < n; k++)
                if (buf[k] != c)
                    fail_msg("mixed content at byte %zd: %c then %c", k, c, buf[k]);
            reads++;
            seen_a += c == 'a';
            seen_b += c == 'b';
        }
        got = h_line(fd, 1);
        if (*got)
            break;
    }
    if (!*got)
        got = h_line(fd, H_WAIT_MS);
    close(fd);
    h_finish(&s, path);
    free(p);
    /* the directory holds the file alone: "wrote many 1" */
    assert_string_equal(got, "wrote many 1");
    assert_true(reads > 10);
    assert_true(seen_a > 0 && seen_b > 0);
}

/* Reading 1 GiB of a sparse file takes about 8 times as long as 128 MiB:
 * linear, with a generous bound. */
static void test_linear(void **state)
{
    (void)state;
    char *a = path_in("s128"), *b = path_in("s1g");
    int fa = open(a, O_CREAT | O_WRONLY, 0644), fb = open(b, O_CREAT | O_WRONLY, 0644);
    assert_int_equal(ftruncate(fa, 128 << 20), 0);
    assert_int_equal(ftruncate(fb, 1 << 30), 0);
    close(fa), close(fb);
    const char *opts[] = { "--lua-memory", "0", NULL };
    run_case_opts("linear", "134217728,1073741824,134217728,true", opts);
    free(a), free(b);
}

/* Files count against --max-conns with the connections: an open beyond
 * it fails with "Too many open files"; closing, or collecting, frees
 * the fds. */
static void test_fd_limit(void **state)
{
    (void)state;
    const char *opts[] = { "--max-conns", "8", NULL };
    /* 8 slots: the test's connection holds one, so 7 files */
    run_case_opts("limit", "7,Too many open files,nil,Too many open files,true,true", opts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_write, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_errors, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_paths, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_permission, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_outside_coroutine, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_beneath, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_write_file_atomic, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_linear, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_fd_limit, mk_dir, rm_dir),
    };
    return cmocka_run_group_tests_name("fs", tests, NULL, NULL);
}
