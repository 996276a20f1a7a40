/* Whole files: read one into memory, write one atomically.
 *
 * An atomic write goes to a temporary file path + ".lpnx-tmp.XXXXXX" in the
 * target's own folder (so that the final rename stays on one file system).
 * Committing flushes and fsyncs it, gives it the permission bits of the file
 * it replaces (or 0644), renames it over path and fsyncs the folder, so
 * that the rename itself survives a crash. Until the rename, any failure
 * (a full disk included) removes the temporary file and leaves a file
 * already at path untouched.
 *
 *   lpnx_atomic_file f;
 *   if (lpnx_atomic_begin(&f, path, err, errlen) != 0) return -1;
 *   if (lpnx_atomic_write(&f, bytes, len, err, errlen) != 0) return -1;
 *   return lpnx_atomic_commit(&f, err, errlen);
 *
 * A library that writes by file name writes to f.temp_path between begin
 * and commit instead of calling lpnx_atomic_write.
 *
 * A process killed between begin and commit leaves its temporary file
 * behind. The next commit to the same path removes such leftovers: files
 * named path + ".lpnx-tmp." + six letters or digits, last written before
 * that save began and locked by no live save (begin holds an flock on its
 * temporary file until it is closed, so a save of the same path still
 * under way elsewhere keeps its own).
 *
 * Plain C99 + POSIX, no Lua. Nothing here aborts or keeps global state;
 * every error is returned as non-zero with "path: reason (strerror)" in the
 * caller's buffer (err may be NULL). */
#ifndef LPNX_IO_FILE_H
#define LPNX_IO_FILE_H

#include <stddef.h>
#include <time.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Reads a whole file into a malloc'd buffer (free it with free()). On error
 * returns non-zero, sets *bytes = NULL, *len = 0, and writes "path: reason"
 * into err. An empty file gives a non-NULL buffer with *len == 0. */
int lpnx_file_read(const char *path, unsigned char **bytes, size_t *len, char *err, size_t errlen);

/* A file being written atomically. path, temp_path and fp are NULL once it
 * is committed or aborted, and after any failure. */
typedef struct {
    const char *path; /* the target, as given to lpnx_atomic_begin; the caller keeps it alive */
    char *temp_path;  /* the temporary file beside it, path + ".lpnx-tmp.XXXXXX" (malloc'd) */
    FILE *fp;         /* open for writing on temp_path */
    int error;        /* errno of the last failure (kept after it); 0 for a write that stopped short without one */
    struct timespec began; /* when lpnx_atomic_begin ran: older temporary files of path are leftovers */
} lpnx_atomic_file;

/* Creates the temporary file beside path, empty and open for writing. On
 * failure nothing is created and f holds nothing but f->error. */
int lpnx_atomic_begin(lpnx_atomic_file *f, const char *path, char *err, size_t errlen);

/* Appends len bytes (bytes may be NULL when len == 0). On failure the
 * temporary file is removed, as by lpnx_atomic_abort. */
int lpnx_atomic_write(lpnx_atomic_file *f, const void *bytes, size_t len, char *err, size_t errlen);

/* Flushes and fsyncs the temporary file, gives it the permission bits of
 * the file at path (or 0644 when there is none), renames it over path and
 * fsyncs the folder. Returns 0 when done; -1 when the file could not be put
 * in place (the temporary file is removed, a file already at path is
 * untouched); 1 when the new file is in place but syncing its folder failed
 * (err: "path: written, but syncing its folder failed (...)"). A folder that
 * cannot be opened or does not support fsync (EINVAL) is no failure: the
 * data itself is synced. f holds nothing afterwards. */
int lpnx_atomic_commit(lpnx_atomic_file *f, char *err, size_t errlen);

/* Closes and removes the temporary file. Does nothing on an f that is
 * committed, aborted, failed or zeroed, so it may run on every way out. */
void lpnx_atomic_abort(lpnx_atomic_file *f);

/* Writes len bytes to path atomically: begin, write and commit above, with
 * commit's return value. */
int lpnx_file_write_atomic(const char *path, const void *bytes, size_t len, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* LPNX_IO_FILE_H */
