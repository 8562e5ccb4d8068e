/* fds.h - what the core's unit tests share: counting the process's open
 * fds, so that a test can check it left none behind. */
#ifndef MR_TEST_FDS_H
#define MR_TEST_FDS_H

#include <dirent.h>

static inline int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

#endif
