/* watch.c - inotify on the directories of watched files. */
#include "watch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO)

int watch_init(struct watch *w)
{
    memset(w, 0, sizeof *w);
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    return w->fd < 0 ? -errno : 0;
}

void watch_destroy(struct watch *w)
{
    for (size_t i = 0; i < w->ndirs; i++)
        free(w->dirs[i].path);
    for (size_t i = 0; i < w->nfiles; i++) {
        free(w->files[i].name);
        free(w->files[i].path);
    }
    free(w->dirs);
    free(w->files);
    if (w->fd >= 0)
        close(w->fd);
    memset(w, 0, sizeof *w);
    w->fd = -1;
}

static int add_dir(struct watch *w, const char *dir)
{
    for (size_t i = 0; i < w->ndirs; i++)
        if (strcmp(w->dirs[i].path, dir) == 0)
            return (int)i;
    int wd = inotify_add_watch(w->fd, dir, WATCH_MASK | IN_ONLYDIR);
    if (wd < 0)
        return -errno;
    struct watch_dir *d = realloc(w->dirs, (w->ndirs + 1) * sizeof *d);
    if (!d)
        return -ENOMEM;
    w->dirs = d;
    d[w->ndirs].wd = wd;
    if (!(d[w->ndirs].path = strdup(dir)))
        return -ENOMEM;
    return (int)w->ndirs++;
}

int watch_add(struct watch *w, const char *path)
{
    for (size_t i = 0; i < w->nfiles; i++)
        if (strcmp(w->files[i].path, path) == 0)
            return 0;
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return -ENOMEM;
    if (!*dir) {            /* a file in / */
        free(dir);
        dir = strdup("/");
    }
    int di = dir ? add_dir(w, dir) : -ENOMEM;
    free(dir);
    if (di < 0)
        return di;
    struct watch_file *f = realloc(w->files, (w->nfiles + 1) * sizeof *f);
    if (!f)
        return -ENOMEM;
    w->files = f;
    f += w->nfiles;
    f->dir = di;
    f->name = strdup(slash ? slash + 1 : path);
    f->path = strdup(path);
    if (!f->name || !f->path) {
        free(f->name);
        free(f->path);
        return -ENOMEM;
    }
    w->nfiles++;
    return 0;
}

/* Does the event (header ev, name bytes of ev->len after it) concern a
 * watched file? The name is NUL-padded to len bytes: never read past. */
static bool concerns(const struct watch *w, const struct inotify_event *ev,
                     const char *name)
{
    for (size_t i = 0; i < w->nfiles; i++) {
        const char *want = w->files[i].name;
        size_t n = strlen(want);
        if (w->dirs[w->files[i].dir].wd == ev->wd && n < ev->len &&
            memcmp(want, name, n + 1) == 0)
            return true;
    }
    return false;
}

bool watch_match(const struct watch *w, const char *events, size_t n)
{
    bool hit = false;
    struct inotify_event ev;
    for (size_t off = 0; off + sizeof ev <= n;) {
        memcpy(&ev, events + off, sizeof ev); /* no alignment assumed */
        if (ev.len > n - off - sizeof ev)
            break; /* a truncated event */
        if (ev.mask & IN_Q_OVERFLOW)
            hit = true; /* events were lost: assume the worst */
        else if (concerns(w, &ev, events + off + sizeof ev))
            hit = true;
        off += sizeof ev + ev.len;
    }
    return hit;
}
