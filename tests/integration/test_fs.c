/* test_fs.c - mr.fs: files through the ring, for connection functions;
 * its errors, write_file's atomicity, `beneath`, linear reads, the fd
 * limit, and sock:send_file. Each test names a Lua case on its
 * connection's first line; the case answers one line, which the test
 * compares. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

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
    /* CPU time (os.clock: every thread of the process, the kernel's
     * io-wq workers included), not the wall clock, which other work on
     * the machine stretches */
    "local function time_read(path, chunk)\n"
    "  local f = assert(fs.open(path))\n"
    "  local t0, total = os.clock(), 0\n"
    "  while true do\n"
    "    local s = assert(f:read(chunk))\n"
    "    if s == '' then break end\n"
    "    total = total + #s\n"
    "  end\n"
    "  f:close()\n"
    "  return os.clock() - t0, total\n"
    "end\n"
    "T.linear = function()\n"
    /* each read once before it is timed, so that both come from the
     * page cache: a first read of a hole fills it, on io-wq */
    "  time_read(dir .. '/s128', 1048576)\n"
    "  time_read(dir .. '/s1g', 1048576)\n"
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
    "  local rf = j(fs.read_file(dir .. '/lim')) .. ',' .. j(mr.tcp('127.0.0.1', 9))\n"
    "  for _, f in ipairs(files) do f:close() end\n"
    "  local again = fs.open(dir .. '/lim') ~= nil\n"
    "  files = nil\n"
    "  for i = 1, 300 do assert(fs.open(dir .. '/lim')) if i % 4 == 0 then collectgarbage() end end\n"
    "  collectgarbage()\n"
    "  return j(n, err, rf, again, fs.open(dir .. '/lim') ~= nil)\n"
    "end\n"
    "T.sizes = function()\n"
    "  local a = assert(fs.read_file('/proc/kallsyms'))\n"
    "  local f = assert(io.open('/proc/kallsyms')) local b = f:read('*a') f:close()\n"
    "  return j(#a > 65536, #a == #b, fs.read_file(dir .. '/sparse')) .. '|' ..\n"
    "         #assert(fs.read_file(dir .. '/r.txt'))\n"
    "end\n"
    "T.wmode = function()\n"
    "  local function m(name) assert(fs.write_file(dir .. '/' .. name, 'new'))\n"
    "    return ('%o'):format(fs.stat(dir .. '/' .. name).mode) end\n"
    "  return j(m('m600'), m('m751'), m('fresh'), fs.read_file(dir .. '/m600'))\n"
    "end\n"
    "T.badargs = function(sock)\n"
    "  local function nul(f, ...) local ok, e = pcall(f, ...)\n"
    "    return not ok and e:find('without NUL bytes', 1, true) ~= nil end\n"
    "  local s = dir .. '/secret\\0.html'\n"
    "  local ok, e = pcall(fs.open, dir, '')\n"
    "  return j(ok, e) .. '|' .. j(nul(fs.open, s), nul(fs.stat, s), nul(fs.lstat, s),\n"
    "    nul(fs.read_file, s), nul(fs.write_file, s, 'x'), nul(fs.list, s), nul(fs.mkdir, s),\n"
    "    nul(fs.remove, s), nul(fs.rename, dir .. '/secret', s), nul(fs.rename, s, dir .. '/x'),\n"
    "    nul(fs.open, 'x', 'r', { beneath = s }), nul(sock.send_file, sock, s))\n"
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
    h_log_wait(&s, NULL, 0);
    if (strcmp(got, want) && s.log && strstr(s.log, "linear:"))
        fprintf(stderr, "%s", strstr(s.log, "linear:"));
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

/* read_file of a file whose size says 0, beyond its first 64 KiB; of a
 * file bigger than a Lua string can be (sparse, 2.5 GiB): nil, "File too
 * large", and the worker goes on. (/dev/zero, which never ends, gives
 * the same after filling 2 GiB: seconds, and more under ASan than the
 * worker's watchdog allows, so it is not tried here.) */
static void test_read_file_sizes(void **state)
{
    (void)state;
    char *p = path_in("sparse");
    int fd = open(p, O_CREAT | O_WRONLY, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 5ll << 29), 0);
    close(fd);
    free(p);
    p = path_in("r.txt");
    fd = open(p, O_CREAT | O_WRONLY, 0644);
    assert_int_equal(write(fd, "hello", 5), 5);
    close(fd);
    free(p);
    run_case("sizes", "true,true,nil,File too large|5");
}

/* write_file keeps the permissions of the file it replaces (its new
 * content once came in a file of 0644); a new file gets 0644 less the
 * umask (the harness's servers inherit this process's). */
static void test_write_file_mode(void **state)
{
    (void)state;
    const char *names[] = { "m600", "m751" };
    mode_t modes[] = { 0600, 0751 };
    for (int i = 0; i < 2; i++) {
        char *p = path_in(names[i]);
        int fd = open(p, O_CREAT | O_WRONLY, 0600);
        assert_true(fd >= 0);
        assert_int_equal(fchmod(fd, modes[i]), 0);
        close(fd);
        free(p);
    }
    mode_t um = umask(022);
    umask(um);
    char want[64];
    snprintf(want, sizeof want, "600,751,%o,new", 0644 & ~um);
    run_case("wmode", want);
}

/* An empty mode, and a path with a NUL byte in every call that takes
 * one (the kernel would see only what comes before it): raise. */
static void test_bad_args(void **state)
{
    (void)state;
    run_case("badargs", "false,bad argument #2 to '?' (\"r\", \"w\", \"a\", "
                        "\"r+\", \"w+\" or \"a+\" expected)|true,true,true,true,"
                        "true,true,true,true,true,true,true,true");
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
    /* 8 slots: the test's connection holds one, so 7 files; then an
     * outbound connection fails as a file would (it said "too many
     * connections") */
    run_case_opts("limit", "7,Too many open files,nil,Too many open files,nil,Too many open "
                           "files,true,true", opts);
}


/* --- sock:send_file ---------------------------------------------------- */

/* Each request line "MODE PATH OFFSET LENGTH" (LENGTH -1: to the end;
 * MODE path, file or splice) is answered by the bytes, then
 * "\nsent=N\n", or "\nerr=E\n". */
static const char send_lua[] =
    "local mr = require 'moonring'\n"
    "return function(sock)\n"
    "  while true do\n"
    "    local line = sock:receive('*l')\n"
    "    if not line then return end\n"
    "    local mode, path, off, len = line:match('^(%S+) (%S+) (%d+) (%-?%d+)$')\n"
    "    off, len = tonumber(off), tonumber(len)\n"
    "    if mode:sub(1, 1) == 't' then sock:settimeouts(nil, 0.3, nil) mode = mode:sub(2) end\n"
    "    if len < 0 then len = nil end\n"
    "    local src, opts = path, mode == 'splice' and { splice = true } or nil\n"
    "    if mode == 'file' or mode == 'closed' then src = assert(mr.fs.open(path)) end\n"
    "    if mode == 'closed' then src:close() end\n"
    "    local n, err = sock:send_file(src, off, len, opts)\n"
    "    if mode == 'file' then src:close() end\n"
    "    sock:send(n and ('\\nsent=' .. n .. '\\n') or ('\\nerr=' .. err .. '\\n'))\n"
    "  end\n"
    "end\n";

static void sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned len = 0;
    EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

static char *random_file(const char *name, size_t n, char **data)
{
    char *p = path_in(name);
    *data = malloc(n);
    h_fill_random(*data, n, 7);
    FILE *f = fopen(p, "w");
    assert_int_equal(fwrite(*data, 1, n, f), n);
    fclose(f);
    return p;
}

/* The line a send_file case ends with: "\nsent=N\n". */
static void expect_sent(int fd, size_t n)
{
    assert_string_equal(h_line(fd, H_WAIT_MS), "");
    char trailer[64];
    snprintf(trailer, sizeof trailer, "sent=%zu", n);
    assert_string_equal(h_line(fd, H_WAIT_MS), trailer);
}

/* Ask for one range and check its bytes (by their SHA-256) and count. */
static void fetch_range(int fd, const char *mode, const char *path,
                        const char *data, size_t size, size_t off, long len)
{
    char req[512];
    snprintf(req, sizeof req, "%s %s %zu %ld\n", mode, path, off, len);
    h_send_all(fd, req, strlen(req));
    size_t want = off >= size ? 0 : len < 0 || off + (size_t)len > size ? size - off
                                                                       : (size_t)len;
    char *got = malloc(want + 1);
    assert_int_equal(h_recv_exact(fd, got, want, H_WAIT_MS), want);
    char a[65], b[65];
    sha256_hex(got, want, a);
    sha256_hex(data + (off < size ? off : size), want, b);
    if (strcmp(a, b))
        fail_msg("%s %zu %ld: sha256 %s, wanted %s", mode, off, len, a, b);
    free(got);
    expect_sent(fd, want);
}

/* A 3 MB file by path, by file object and by splice, whole and in
 * ranges (one past the end, one beyond it), on one connection. */
static void test_send_file(void **state)
{
    (void)state;
    size_t size = 3000000;
    char *data;
    char *p = random_file("data", size, &data);
    struct h_server s;
    char *path = h_serve(&s, send_lua, NULL, NULL);
    int fd = h_connect(s.port, false);
    const char *modes[] = { "path", "file", "splice" };
    for (int m = 0; m < 3; m++) {
        fetch_range(fd, modes[m], p, data, size, 0, -1);
        fetch_range(fd, modes[m], p, data, size, 12345, 100000);
        fetch_range(fd, modes[m], p, data, size, size - 10, 1000);
        fetch_range(fd, modes[m], p, data, size, size + 5, -1);
        fetch_range(fd, modes[m], p, data, size, 1, 1);
    }
    const char *errs[][2] = {
        { "path /nonexistent 0 -1\n", "err=No such file or directory" },
        { "closed /etc/hostname 0 -1\n", "err=closed" },
        { "path /tmp 0 -1\n", "err=Is a directory" },
    };
    for (int i = 0; i < 3; i++) {
        h_send_all(fd, errs[i][0], strlen(errs[i][0]));
        assert_string_equal(h_line(fd, H_WAIT_MS), "");
        assert_string_equal(h_line(fd, H_WAIT_MS), errs[i][1]);
    }
    close(fd);
    h_finish(&s, path);
    free(p);
    free(data);
}

/* A client that does not read: the server holds about two chunks of the
 * file, not the file (64 MiB); then it reads all of it, intact. */
static void test_send_file_backpressure(void **state)
{
    (void)state;
    char *p = path_in("zeros");
    int f = open(p, O_CREAT | O_WRONLY, 0644);
    assert_int_equal(ftruncate(f, 64 << 20), 0);
    close(f);
    struct h_server s;
    char *path = h_serve(&s, send_lua, NULL, NULL);
    int fd = h_connect(s.port, false);
    long before = h_rss_kib(s.pid);
    char req[512];
    snprintf(req, sizeof req, "path %s 0 -1\n", p);
    h_send_all(fd, req, strlen(req));
    h_sleep_ms(500);
    long during = h_rss_kib(s.pid);
    static char buf[1 << 20];
    size_t total = 0;
    while (total < (64u << 20)) {
        size_t n = h_recv_exact(fd, buf, sizeof buf, H_WAIT_MS);
        for (size_t i = 0; i < n; i++)
            if (buf[i])
                fail_msg("byte %zu is not 0", total + i);
        total += n;
        if (n < sizeof buf)
            break;
    }
    assert_int_equal(total, 64u << 20);
    assert_string_equal(h_line(fd, H_WAIT_MS), "");
    assert_string_equal(h_line(fd, H_WAIT_MS), "sent=67108864");
    close(fd);
    h_finish(&s, path);
    free(p);
    if (during - before > 8 * 1024)
        fail_msg("the server grew by %ld KiB while the client did not read",
                 during - before);
}

/* A client that goes away in the middle of a send_file, by reads and by
 * splice: the server carries on (the next client gets its bytes) and
 * exits cleanly (under ASan, with nothing leaked). */
static void test_send_file_peer_gone(void **state)
{
    (void)state;
    char *p = path_in("zeros");
    int f = open(p, O_CREAT | O_WRONLY, 0644);
    assert_int_equal(ftruncate(f, 64 << 20), 0);
    close(f);
    struct h_server s;
    char *path = h_serve(&s, send_lua, NULL, NULL);
    static char buf[1 << 20];
    const char *modes[] = { "path", "file", "splice" };
    for (int m = 0; m < 3; m++) {
        int fd = h_connect(s.port, false);
        char req[512];
        snprintf(req, sizeof req, "%s %s 0 -1\n", modes[m], p);
        h_send_all(fd, req, strlen(req));
        assert_int_equal(h_recv_exact(fd, buf, sizeof buf, H_WAIT_MS), sizeof buf);
        close(fd);
    }
    int fd = h_connect(s.port, false);
    char req[512];
    snprintf(req, sizeof req, "path %s 1000 10\n", p);
    h_send_all(fd, req, strlen(req));
    assert_int_equal(h_recv_exact(fd, buf, 10, H_WAIT_MS), 10);
    assert_string_equal(h_line(fd, H_WAIT_MS), "");
    assert_string_equal(h_line(fd, H_WAIT_MS), "sent=10");
    close(fd);
    h_finish(&s, path);
    free(p);
}

/* A send timeout of 0.3 s, and a client that reads 8 MiB steadily in
 * about 1.3 s: the send_file goes on as long as it makes progress (it
 * once timed out 0.3 s after the call), by reads and by splice. */
static void test_send_file_timeout_progress(void **state)
{
    (void)state;
    char *p = path_in("zeros");
    int f = open(p, O_CREAT | O_WRONLY, 0644);
    size_t size = 8u << 20;
    assert_int_equal(ftruncate(f, (off_t)size), 0);
    close(f);
    struct h_server s;
    char *path = h_serve(&s, send_lua, NULL, NULL);
    static char buf[128 << 10];
    const char *modes[] = { "tpath", "tsplice" };
    for (int m = 0; m < 2; m++) {
        int fd = h_connect(s.port, false);
        int small = 64 << 10;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        char req[512];
        snprintf(req, sizeof req, "%s %s 0 -1\n", modes[m], p);
        h_send_all(fd, req, strlen(req));
        size_t total = 0;
        while (total < size) {
            size_t want = size - total < sizeof buf ? size - total : sizeof buf;
            size_t n = h_recv_exact(fd, buf, want, H_WAIT_MS);
            if (n < want)
                fail_msg("%s: the connection ended after %zu bytes", modes[m], total + n);
            total += n;
            h_sleep_ms(20);
        }
        assert_string_equal(h_line(fd, H_WAIT_MS), "");
        char want[64];
        snprintf(want, sizeof want, "sent=%zu", size);
        assert_string_equal(h_line(fd, H_WAIT_MS), want);
        close(fd);
    }
    h_finish(&s, path);
    free(p);
}

/* send_file on a tls:// listener: the bytes go through TLS; a python
 * client checks their SHA-256. */
static const char py_tls_get[] =
    "import hashlib, socket, ssl, sys\n"
    "port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])\n"
    "c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n"
    "s = c.wrap_socket(socket.create_connection(('127.0.0.1', port), timeout=10))\n"
    "s.sendall(('path %s 0 -1\\n' % path).encode())\n"
    "buf = b''\n"
    "while len(buf) < n + 1 or not buf.endswith(b'\\n'):\n"
    "    d = s.recv(1 << 16)\n"
    "    if not d: break\n"
    "    buf += d\n"
    "print(hashlib.sha256(buf[:n]).hexdigest(), buf[n:].decode().strip())\n";

static void test_send_file_tls(void **state)
{
    (void)state;
    char *cert = path_in("cert.pem"), *key = path_in("key.pem");
    const char *mk[] = { "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                         "-out", cert, "-days", "2", "-subj", "/CN=localhost", NULL };
    char *out;
    assert_int_equal(h_exec(mk, NULL, &out, H_WAIT_MS, true), 0);
    free(out);
    size_t size = 2500000;
    char *data;
    char *p = random_file("data", size, &data);
    const char *opts[] = { "-l", "tls://127.0.0.1:0", "--tls-cert", cert,
                           "--tls-key", key, NULL };
    struct h_server s;
    char *path = h_serve(&s, send_lua, opts, NULL);
    char port[16], n[16];
    snprintf(port, sizeof port, "%d", s.port);
    snprintf(n, sizeof n, "%zu", size);
    const char *argv[] = { "python3", "-c", py_tls_get, port, p, n, NULL };
    assert_int_equal(h_exec(argv, NULL, &out, 2 * H_WAIT_MS, true), 0);
    char want[128], hex[65];
    sha256_hex(data, size, hex);
    snprintf(want, sizeof want, "%s sent=%zu\n", hex, size);
    assert_string_equal(out, want);
    free(out);
    h_finish(&s, path);
    free(p), free(data), free(cert), free(key);
}

/* "A path": a splice send_file of path; any other first line: a
 * connection that is never sent a byte. */
static const char race_lua[] =
    "return function(sock)\n"
    "  local line = sock:receive('*l')\n"
    "  if line and line:sub(1, 2) == 'A ' then\n"
    "    sock:send_file(line:sub(3), 0, nil, { splice = true })\n"
    "    return\n"
    "  end\n"
    "  sock:receive('*a')\n"
    "end\n";

/* Each request line "PATH HEADLEN": HEADLEN bytes of 'h' by sock:send,
 * then the file by send_file, then "\nsent=N\n" or "\nerr=E\n". */
static const char head_lua[] =
    "return function(sock)\n"
    "  while true do\n"
    "    local line = sock:receive('*l')\n"
    "    if not line then return end\n"
    "    local path, hl = line:match('^(%S+) (%d+)$')\n"
    "    sock:send(string.rep('h', tonumber(hl)))\n"
    "    local n, err = sock:send_file(path)\n"
    "    sock:send(n and ('\\nsent=' .. n .. '\\n') or ('\\nerr=' .. err .. '\\n'))\n"
    "  end\n"
    "end\n";

/* Ask for PATH after a head of hl bytes; the first read must hold more
 * than the head when first_more (the head waited for the file's first
 * chunk, as an HTTP head does), then all of it must come, intact. */
static void fetch_with_head(int fd, const char *p, size_t hl, const char *data,
                            size_t size, bool first_more)
{
    char req[512];
    snprintf(req, sizeof req, "%s %zu\n", p, hl);
    h_send_all(fd, req, strlen(req));
    size_t want = hl + size, got = 0;
    char *buf = malloc(want);
    struct pollfd pf = { .fd = fd, .events = POLLIN };
    assert_int_equal(poll(&pf, 1, H_WAIT_MS), 1);
    ssize_t n = recv(fd, buf, want, 0);
    assert_true(n > 0);
    got = (size_t)n;
    if (first_more && got <= hl)
        fail_msg("the head (%zu bytes) came alone: %zu bytes", hl, got);
    got += h_recv_exact(fd, buf + got, want - got, H_WAIT_MS);
    assert_int_equal(got, want);
    for (size_t i = 0; i < hl; i++)
        if (buf[i] != 'h')
            fail_msg("head byte %zu is %d", i, buf[i]);
    assert_memory_equal(buf + hl, data, size);
    free(buf);
    expect_sent(fd, size);
}

/* What was sent just before a send_file goes with its first chunk, in
 * one send (a head is not sent alone); a failed send_file still sends
 * it; and a head above the high-water mark, which is not held, comes
 * whole before the file. */
static void test_send_file_head(void **state)
{
    (void)state;
    size_t size = 200000;
    char *data;
    char *p = random_file("data", size, &data);
    struct h_server s;
    char *path = h_serve(&s, head_lua, NULL, NULL);
    int fd = h_connect(s.port, false);
    for (int i = 0; i < 5; i++)
        fetch_with_head(fd, p, 100, data, size, true);
    const char bad[] = "/nonexistent 100\n";
    h_send_all(fd, bad, strlen(bad));
    char head[100];
    assert_int_equal(h_recv_exact(fd, head, sizeof head, H_WAIT_MS), sizeof head);
    assert_string_equal(h_line(fd, H_WAIT_MS), "");
    assert_string_equal(h_line(fd, H_WAIT_MS), "err=No such file or directory");
    fetch_with_head(fd, p, 300000, data, size, false);
    close(fd);
    h_finish(&s, path);
    free(p);
    free(data);
}

static void make_cold(const char *p, size_t size, bool fill);

/* A resets its connection while a splice of a cold file is on its way;
 * B connects at once, likely getting A's fd number: B gets nothing of
 * A's file (the splice's rest once went to whichever socket had the
 * number). */
static void test_send_file_splice_fd_reuse(void **state)
{
    (void)state;
    char *p = path_in("cold64");
    make_cold(p, 64u << 20, true);
    struct h_server s;
    char *path = h_serve(&s, race_lua, NULL, NULL);
    char req[512];
    snprintf(req, sizeof req, "A %s\n", p);
    for (int i = 0; i < 20; i++) {
        make_cold(p, 64u << 20, false);
        int a = h_connect(s.port, false);
        h_send_all(a, req, strlen(req));
        usleep(500);
        struct linger lg = { 1, 0 };
        setsockopt(a, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(a); /* a reset */
        int b = h_connect(s.port, false);
        h_send_all(b, "B\n", 2);
        struct pollfd pf = { .fd = b, .events = POLLIN };
        if (poll(&pf, 1, 150) == 1) {
            char buf[4096];
            ssize_t n = recv(b, buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0)
                fail_msg("try %d: B got %zd bytes of A's file", i, n);
        }
        close(b);
    }
    h_finish(&s, path);
    free(p);
}

/* --- the loop goes on while the disk works ------------------------------- */

/* "ping" is answered "pong"; "fs PATH" or "io PATH" reads the whole file
 * by mr.fs (256 KiB a read) or by Lua's io (1 MiB a read, which stalls
 * the worker) and answers "done BYTES". */
static const char stall_lua[] =
    "local mr = require 'moonring'\n"
    "return function(sock)\n"
    "  while true do\n"
    "    local line = sock:receive('*l')\n"
    "    if not line then return end\n"
    "    if line == 'ping' then sock:send('pong\\n') else\n"
    "      local how, path = line:match('^(%S+) (.+)$')\n"
    "      local total = 0\n"
    "      if how == 'fs' then\n"
    "        local f = assert(mr.fs.open(path))\n"
    "        while true do local s = assert(f:read(262144)) if s == '' then break end total = total + #s end\n"
    "        f:close()\n"
    "      else\n"
    "        local f = assert(io.open(path, 'rb'))\n"
    "        while true do local s = f:read(1048576) if not s then break end total = total + #s end\n"
    "        f:close()\n"
    "      end\n"
    "      sock:send('done ', total, '\\n')\n"
    "    end\n"
    "  end\n"
    "end\n";

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One ping: its round trip in ms. */
static double ping(int fd)
{
    double t0 = now_ms();
    h_send_all(fd, "ping\n", 5);
    char buf[5];
    assert_int_equal(h_recv_exact(fd, buf, 5, 3 * H_WAIT_MS), 5);
    assert_memory_equal(buf, "pong\n", 5);
    return now_ms() - t0;
}

/* Ping until `reader` (if >= 0) has its "done" line, or `count` pings
 * (reader < 0); the 99th percentile, in ms. */
static double ping_p99(int fd, int reader, int count, const char *want_done)
{
    static double v[200000];
    int n = 0;
    for (;;) {
        if (reader < 0 && n >= count)
            break;
        if (reader >= 0) {
            struct pollfd p = { .fd = reader, .events = POLLIN };
            if (poll(&p, 1, 0) == 1) {
                assert_string_equal(h_line(reader, H_WAIT_MS), want_done);
                break;
            }
        }
        if (n < (int)(sizeof v / sizeof v[0]))
            v[n++] = ping(fd);
        h_sleep_ms(1);
    }
    assert_true(n > 0);
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return v[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1];
}

/* A 256 MiB file written, synced and dropped from the page cache. */
static void make_cold(const char *p, size_t size, bool fill)
{
    int f = open(p, O_CREAT | O_RDWR, 0644);
    assert_true(f >= 0);
    if (fill) {
        static char block[1 << 20];
        h_fill_random(block, sizeof block, 3);
        for (size_t at = 0; at < size; at += sizeof block)
            assert_int_equal(write(f, block, sizeof block), (ssize_t)sizeof block);
    }
    assert_int_equal(fsync(f), 0);
    assert_int_equal(posix_fadvise(f, 0, 0, POSIX_FADV_DONTNEED), 0);
    close(f);
}

/* While a coroutine reads a 256 MiB file that is not in the page cache,
 * the worker answers pings as when idle; reading it by io.open in a
 * handler stalls them. */
static void test_read_stall(void **state)
{
    (void)state;
    size_t size = 256u << 20;
    char *p = path_in("cold");
    make_cold(p, size, true);
    struct h_server s;
    char *path = h_serve(&s, stall_lua, NULL, NULL);
    int pinger = h_connect(s.port, false), reader = h_connect(s.port, false);
    char req[512], done[64];
    snprintf(done, sizeof done, "done %zu", size);
    /* once through mr.fs first: the io-wq threads exist, as in a server
     * that has been running */
    char *warm = path_in("warm");
    make_cold(warm, 4u << 20, true);
    snprintf(req, sizeof req, "fs %s\n", warm);
    h_send_all(reader, req, strlen(req));
    assert_string_equal(h_line(reader, H_WAIT_MS), "done 4194304");
    free(warm);
    double idle = ping_p99(pinger, -1, 300, NULL);

    make_cold(p, size, false);
    snprintf(req, sizeof req, "fs %s\n", p);
    double t0 = now_ms();
    h_send_all(reader, req, strlen(req));
    double with_fs = ping_p99(pinger, reader, 0, done);
    double fs_ms = now_ms() - t0;

    make_cold(p, size, false);
    snprintf(req, sizeof req, "io %s\n", p);
    t0 = now_ms();
    h_send_all(reader, req, strlen(req));
    double with_io = ping_p99(pinger, reader, 0, done);
    double io_ms = now_ms() - t0;
    close(pinger);
    close(reader);
    h_finish(&s, path);
    unlink(p);
    free(p);
    fprintf(stderr, "stall: ping p99 %.2f ms idle, %.2f ms while mr.fs reads 256 MiB "
                    "cold (%.0f ms), %.2f ms while io.open reads it (%.0f ms)\n",
            idle, with_fs, fs_ms, with_io, io_ms);
    assert_true(with_fs < 50);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_write, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_errors, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_paths, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_read_file_sizes, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_bad_args, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_write_file_mode, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_permission, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_outside_coroutine, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_beneath, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_write_file_atomic, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_linear, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_fd_limit, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_send_file, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_send_file_backpressure, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_send_file_peer_gone, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_send_file_tls, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_send_file_head, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_send_file_timeout_progress, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_send_file_splice_fd_reuse, mk_dir, rm_dir),
        cmocka_unit_test_setup_teardown(test_read_stall, mk_dir, rm_dir),
    };
    if (getenv("TEST_FILTER")) /* e.g. TEST_FILTER=test_read_stall */
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests_name("fs", tests, NULL, NULL);
}
