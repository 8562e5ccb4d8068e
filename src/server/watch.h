/* watch.h - which files a reload depends on, watched with inotify.
 *
 * Editors save in different ways: in place (truncate and write), by
 * writing a temporary file and renaming it over the old one (vim, sed -i),
 * or by deleting and re-creating it. A watch on the file itself is lost
 * on a rename or delete, so we watch the file's directory and match
 * names: IN_CLOSE_WRITE catches the first and last kind, IN_MOVED_TO the
 * second, once per save. The descriptor is read through the ring. */
#ifndef MR_WATCH_H
#define MR_WATCH_H

#include <stdbool.h>
#include <stddef.h>

struct watch_dir {
    int wd;
    char *path;
};

struct watch_file {
    int dir;                 /* index into dirs */
    char *name;              /* basename */
    char *path;
};

struct watch {
    int fd;                  /* inotify, non-blocking; -1 when off */
    struct watch_dir *dirs;
    size_t ndirs;
    struct watch_file *files;
    size_t nfiles;
    char buf[4096] __attribute__((aligned(8)));  /* the ring reads events here */
};

/* Returns 0 or a negative errno. */
int watch_init(struct watch *w);
void watch_destroy(struct watch *w);

/* Watch path (a file) for saves. Adding the same file twice is a no-op.
 * Returns 0 or a negative errno. */
int watch_add(struct watch *w, const char *path);

/* Parse n bytes of events (read into w->buf); true if any concerns a
 * watched file. */
bool watch_match(const struct watch *w, const char *events, size_t n);

#endif
