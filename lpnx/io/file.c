/* Whole-file reading and atomic writing; see file.h for the contracts. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#define _DEFAULT_SOURCE /* flock */

#include "file.h"

/* What a temporary file's name adds to the target's; mkstemp fills the X. */
#define TEMP_SUFFIX ".lpnx-tmp.XXXXXX"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* "path: what (strerror(e))", or "path: what" when e == 0. */
static void set_err(char *err, size_t errlen, const char *path, const char *what, int e) {
    if (err == NULL || errlen == 0)
        return;
    if (e)
        snprintf(err, errlen, "%s: %s (%s)", path, what, strerror(e));
    else
        snprintf(err, errlen, "%s: %s", path, what);
}

/* ------------------------------------------------------------------ */
/* reading                                                             */
/* ------------------------------------------------------------------ */

int lpnx_file_read(const char *path, unsigned char **bytes, size_t *len, char *err, size_t errlen) {
    FILE *fp;
    struct stat st;
    unsigned char *buf;
    size_t cap = 65536, n = 0;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (bytes == NULL || len == NULL || path == NULL) {
        set_err(err, errlen, path ? path : "(no path)", "no path or output given", 0);
        return -1;
    }
    *bytes = NULL;
    *len = 0;
    fp = fopen(path, "rb");
    if (fp == NULL) {
        set_err(err, errlen, path, "cannot open", errno);
        return -1;
    }
    if (fstat(fileno(fp), &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            set_err(err, errlen, path, "is a directory", 0);
            fclose(fp);
            return -1;
        }
        /* +1 so that a regular file is read to its end without regrowing */
        if (S_ISREG(st.st_mode) && st.st_size >= 0 && (uint64_t)st.st_size < (uint64_t)SIZE_MAX)
            cap = (size_t)st.st_size + 1;
    }
    buf = (unsigned char *)malloc(cap);
    if (buf == NULL) {
        set_err(err, errlen, path, "out of memory", 0);
        fclose(fp);
        return -1;
    }
    for (;;) {
        size_t got, want;
        if (n == cap) {
            unsigned char *nb;
            if (cap > SIZE_MAX / 2) {
                set_err(err, errlen, path, "file too large", 0);
                goto fail;
            }
            nb = (unsigned char *)realloc(buf, cap * 2);
            if (nb == NULL) {
                set_err(err, errlen, path, "out of memory", 0);
                goto fail;
            }
            buf = nb;
            cap *= 2;
        }
        want = cap - n;
        errno = 0;
        got = fread(buf + n, 1, want, fp);
        n += got;
        if (got < want) {
            if (ferror(fp)) {
                set_err(err, errlen, path, "read failed", errno ? errno : EIO);
                goto fail;
            }
            break; /* end of file */
        }
    }
    fclose(fp);
    *bytes = buf;
    *len = n;
    return 0;
fail:
    free(buf);
    fclose(fp);
    return -1;
}

/* ------------------------------------------------------------------ */
/* atomic writing                                                      */
/* ------------------------------------------------------------------ */

void lpnx_atomic_abort(lpnx_atomic_file *f) {
    if (f == NULL)
        return;
    if (f->fp != NULL)
        fclose(f->fp);
    if (f->temp_path != NULL) {
        unlink(f->temp_path);
        free(f->temp_path);
    }
    f->path = NULL;
    f->temp_path = NULL;
    f->fp = NULL;
}

/* Records errno e (0 for a write that stopped short without one) and
 * removes the temporary file; the caller has written the message. */
static int fail(lpnx_atomic_file *f, int e) {
    f->error = e;
    lpnx_atomic_abort(f);
    return -1;
}

/* The message of a write, flush or close that failed with errno e. */
static void set_write_err(char *err, size_t errlen, const char *path, const char *what, int e) {
    char buf[64];
    if (e == 0) {
        snprintf(buf, sizeof buf, "%s (short write)", what);
        what = buf;
    }
    set_err(err, errlen, path, what, e);
}

int lpnx_atomic_begin(lpnx_atomic_file *f, const char *path, char *err, size_t errlen) {
    size_t plen;
    int fd;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    memset(f, 0, sizeof *f);
    if (path == NULL || path[0] == '\0') {
        set_err(err, errlen, "(no path)", "no path given", 0);
        return fail(f, EINVAL);
    }
    f->path = path;
    clock_gettime(CLOCK_REALTIME, &f->began);
    plen = strlen(path);
    if (plen > SIZE_MAX - 16) {
        set_err(err, errlen, path, "path too long", 0);
        return fail(f, ENAMETOOLONG);
    }
    f->temp_path = (char *)malloc(plen + sizeof TEMP_SUFFIX);
    if (f->temp_path == NULL) {
        set_err(err, errlen, path, "out of memory", 0);
        return fail(f, ENOMEM);
    }
    memcpy(f->temp_path, path, plen);
    memcpy(f->temp_path + plen, TEMP_SUFFIX, sizeof TEMP_SUFFIX);
    fd = mkstemp(f->temp_path);
    if (fd < 0) {
        int e = errno;
        set_err(err, errlen, path, "cannot create a temporary file next to it", e);
        free(f->temp_path); /* nothing was created */
        f->temp_path = NULL;
        return fail(f, e);
    }
    /* held until the file is closed: a live save's temporary file is
     * never taken for a leftover */
    (void)flock(fd, LOCK_EX | LOCK_NB);
    f->fp = fdopen(fd, "wb");
    if (f->fp == NULL) {
        int e = errno;
        set_err(err, errlen, path, "cannot open the temporary file for writing", e);
        close(fd);
        return fail(f, e);
    }
    return 0;
}

/* Reports a call on an f that is not being written (its begin or an
 * earlier step failed, or it was committed or aborted). */
static int not_open(lpnx_atomic_file *f, char *err, size_t errlen) {
    set_err(err, errlen, f->path ? f->path : "(no path)", "no file is being written", 0);
    return fail(f, EBADF);
}

int lpnx_atomic_write(lpnx_atomic_file *f, const void *bytes, size_t len, char *err, size_t errlen) {
    if (f->fp == NULL)
        return not_open(f, err, errlen);
    if (len == 0)
        return 0;
    if (bytes == NULL) {
        set_err(err, errlen, f->path, "no data given", 0);
        return fail(f, EINVAL);
    }
    errno = 0;
    if (fwrite(bytes, 1, len, f->fp) != len) {
        int e = errno;
        set_write_err(err, errlen, f->path, "write failed", e);
        return fail(f, e);
    }
    return 0;
}

/* Opens the folder that holds path; -1 when it cannot. temp_path starts
 * with a copy of path and is cut at the last slash here. */
static int open_folder(const char *path, char *temp_path) {
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return open(".", O_RDONLY);
    if (slash == path)
        return open("/", O_RDONLY);
    temp_path[slash - path] = '\0';
    return open(temp_path, O_RDONLY);
}

/* Whether name is base + TEMP_SUFFIX with its six X filled in as mkstemp
 * does (letters and digits). */
static int is_temp_of(const char *name, const char *base, size_t blen) {
    const size_t slen = sizeof TEMP_SUFFIX - 1, marker = slen - 6;
    if (strlen(name) != blen + slen || strncmp(name, base, blen) != 0 ||
        strncmp(name + blen, TEMP_SUFFIX, marker) != 0)
        return 0;
    for (const char *c = name + blen + marker; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9'))) return 0;
    return 1;
}

/* Removes the temporary files that earlier saves of path left behind
 * (killed between begin and commit): base + TEMP_SUFFIX, regular files
 * that no live save holds locked and that were last modified before
 * `began`. folder: path's folder, opened; failures change nothing and are
 * not reported. */
static void remove_leftovers(const char *path, int folder, struct timespec began) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const size_t blen = strlen(base);
    int fd = dup(folder);
    if (fd < 0) return;
    DIR *dir = fdopendir(fd);
    if (dir == NULL) {
        close(fd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        const char *name = e->d_name;
        struct stat st;
        if (!is_temp_of(name, base, blen)) continue;
        int tfd = openat(folder, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (tfd < 0) continue;
        if (fstat(tfd, &st) == 0 && S_ISREG(st.st_mode) &&
            (st.st_mtim.tv_sec < began.tv_sec ||
             (st.st_mtim.tv_sec == began.tv_sec && st.st_mtim.tv_nsec < began.tv_nsec)) &&
            flock(tfd, LOCK_EX | LOCK_NB) == 0)
            unlinkat(folder, name, 0);
        close(tfd); /* and its lock */
    }
    closedir(dir);
}

int lpnx_atomic_commit(lpnx_atomic_file *f, char *err, size_t errlen) {
    const char *path = f->path;
    mode_t mode = 0644;
    struct stat st;
    int e, rc = 0, dfd;

    if (f->fp == NULL)
        return not_open(f, err, errlen);
    errno = 0;
    if (fflush(f->fp) != 0) {
        e = errno;
        set_write_err(err, errlen, path, "write failed", e);
        return fail(f, e);
    }
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
        mode = (mode_t)(st.st_mode & 0777);
    if (fchmod(fileno(f->fp), mode) != 0) {
        e = errno;
        set_err(err, errlen, path, "cannot set the permissions of the temporary file", e);
        return fail(f, e);
    }
    if (fsync(fileno(f->fp)) != 0) {
        e = errno;
        set_err(err, errlen, path, "fsync failed", e);
        return fail(f, e);
    }
    errno = 0;
    e = fclose(f->fp);
    f->fp = NULL;
    if (e != 0) {
        e = errno;
        set_write_err(err, errlen, path, "close failed", e);
        return fail(f, e);
    }
    if (rename(f->temp_path, path) != 0) {
        e = errno;
        set_err(err, errlen, path, "cannot rename the temporary file over it", e);
        return fail(f, e);
    }
    /* make the rename durable: fsync the containing folder */
    dfd = open_folder(path, f->temp_path);
    if (dfd >= 0) {
        if (fsync(dfd) != 0 && errno != EINVAL) {
            f->error = errno;
            set_err(err, errlen, path, "written, but syncing its folder failed", f->error);
            rc = 1;
        }
        remove_leftovers(path, dfd, f->began);
        close(dfd);
    }
    free(f->temp_path); /* renamed: nothing to remove */
    f->temp_path = NULL;
    f->path = NULL;
    return rc;
}

int lpnx_file_write_atomic(const char *path, const void *bytes, size_t len, char *err, size_t errlen) {
    lpnx_atomic_file f;
    if (lpnx_atomic_begin(&f, path, err, errlen) != 0 || lpnx_atomic_write(&f, bytes, len, err, errlen) != 0)
        return -1;
    return lpnx_atomic_commit(&f, err, errlen);
}
