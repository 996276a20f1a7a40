/* lpnx.sys: the operating-system glue of the data loader's worker
 * processes, crash-safe training and the progress bar. POSIX only.
 *
 *   local sys = lpnx.sys
 *   local r, w = sys.pipe()
 *   local pid = sys.fork()
 *   if pid == 0 then                        -- the child
 *     lpnx.set_num_threads(1)               -- libgomp is not fork-safe
 *     sys.close(r)
 *     sys.write_tensor(w, lpnx.rand(2, 3))
 *     sys.exit(0)                           -- _exit: no atexit, no stdio flush
 *   end
 *   sys.close(w)
 *   local t = sys.read_tensor(r)            -- nil at a clean end of file
 *   local how, code = sys.waitpid(pid)      -- "exited", 0
 *
 * Every failure raises "lpnx.sys.NAME: what failed: strerror"; interrupted
 * system calls (EINTR) are retried.
 *
 * Frames on pipes (and any other file descriptor):
 *   message: u64 length n, then n bytes.
 *   tensor:  u64 length n, then u64 ndim, ndim x i64 sizes, then the
 *            numel float32 values in row-major order;
 *            n = 8 + 8 * ndim + 4 * numel.
 * Integers are little-endian; the floats are in the host's byte order (the
 * frames go between processes of one machine). A frame longer than
 * LPNX_SYS_MAX_FRAME is refused on both sides, so a corrupt length cannot
 * make the reader allocate wildly.
 *
 * Process-wide state, unavoidable for signals: the SIGPIPE disposition
 * (ignored from the first fork on) and the flags of catch_signal. */
#define _DEFAULT_SOURCE /* TIOCGWINSZ */

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bind.h"

#define LPNX_SYS_MAX_FRAME ((uint64_t)1 << 30) /* 1 GiB, header excluded */

/* Raises "lpnx.sys.fn: what: strerror(err)". */
static int syserror(lua_State *L, const char *fn, const char *what, int err) {
    return luaL_error(L, "lpnx.sys.%s: %s: %s", fn, what, strerror(err));
}

/* Pushes v in decimal (lua_pushfstring has no unsigned 64-bit format). */
static const char *pushu64(lua_State *L, uint64_t v) {
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return lua_pushstring(L, buf);
}

/* A file descriptor argument: a non-negative integer. */
static int checkfd(lua_State *L, int arg) {
    lua_Integer fd = luaL_checkinteger(L, arg);
    if (fd < 0 || fd > INT32_MAX)
        return luaL_argerror(L, arg, lua_pushfstring(L, "expected a file descriptor >= 0, got %I", fd));
    return (int)fd;
}

/* ---- whole-buffer reads and writes ------------------------------------ */

/* Writes all len bytes; 0, or -1 with errno set. */
static int write_all(int fd, const void *buf, size_t len) {
    const unsigned char *p = buf;
    while (len > 0) {
        size_t chunk = len > ((size_t)1 << 30) ? ((size_t)1 << 30) : len;
        ssize_t n = write(fd, p, chunk);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads up to len bytes, stopping early only at end of file. Returns the
 * count read, or -1 with errno set. */
static ssize_t read_full(int fd, void *buf, size_t len) {
    unsigned char *p = buf;
    size_t got = 0;
    while (got < len) {
        size_t chunk = len - got > ((size_t)1 << 30) ? ((size_t)1 << 30) : len - got;
        ssize_t n = read(fd, p + got, chunk);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Reads the 8-byte length that opens a frame. Returns 0 at a clean end of
 * file (no byte), 1 with *len set; raises on errors and a cut header. */
static int read_length(lua_State *L, const char *fn, int fd, uint64_t *len) {
    unsigned char head[8];
    ssize_t got = read_full(fd, head, sizeof head);
    if (got < 0) return syserror(L, fn, "read failed", errno);
    if (got == 0) return 0;
    if (got < 8) return luaL_error(L, "lpnx.sys.%s: truncated message: the length header ends after %d of 8 bytes", fn, (int)got);
    *len = get_u64(head);
    return 1;
}

/* Reads exactly len bytes of a frame body; raises on errors and a cut body. */
static void read_body(lua_State *L, const char *fn, int fd, void *buf, size_t len) {
    ssize_t got = read_full(fd, buf, len);
    if (got < 0) {
        syserror(L, fn, "read failed", errno);
        return;
    }
    if ((size_t)got < len)
        luaL_error(L, "lpnx.sys.%s: truncated message: expected %I bytes, got %I", fn, (lua_Integer)len, (lua_Integer)got);
}

/* ---- processes --------------------------------------------------------- */

/* Ignores SIGPIPE process-wide so that a write into a pipe whose reader is
 * gone fails with EPIPE instead of killing the writer. Set before the fork,
 * so the child inherits it. */
static int ignore_sigpipe(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGPIPE, &sa, NULL);
}

static volatile sig_atomic_t signal_flags[4]; /* INT, TERM, HUP, USR1 */

/* fork() -> pid in the parent, 0 in the child. From the first call on,
 * SIGPIPE is ignored in both (broken pipes come back as EPIPE errors). The
 * stdio buffers are flushed first so the child does not hold a copy of
 * pending output; the child starts with no signal_pending flag set. */
static int l_fork(lua_State *L) {
    if (ignore_sigpipe() != 0) return syserror(L, "fork", "ignoring SIGPIPE failed", errno);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return syserror(L, "fork", "fork failed", errno);
    if (pid == 0)
        for (size_t i = 0; i < sizeof signal_flags / sizeof signal_flags[0]; i++) signal_flags[i] = 0;
    lua_pushinteger(L, (lua_Integer)pid);
    return 1;
}

/* pipe() -> read_fd, write_fd, both close-on-exec. */
static int l_pipe(lua_State *L) {
    int fds[2];
    if (pipe(fds) != 0) return syserror(L, "pipe", "pipe failed", errno);
    for (int i = 0; i < 2; i++) {
        if (fcntl(fds[i], F_SETFD, FD_CLOEXEC) != 0) {
            int err = errno;
            close(fds[0]);
            close(fds[1]);
            return syserror(L, "pipe", "setting close-on-exec failed", err);
        }
    }
    lua_pushinteger(L, fds[0]);
    lua_pushinteger(L, fds[1]);
    return 2;
}

/* close(fd). Not retried on EINTR: Linux releases the descriptor anyway,
 * and a retry could close one that another thread has just opened. */
static int l_close(lua_State *L) {
    int fd = checkfd(L, 1);
    if (close(fd) != 0 && errno != EINTR)
        return syserror(L, "close", lua_pushfstring(L, "closing file descriptor %d failed", fd), errno);
    return 0;
}

/* waitpid(pid [, nohang]) -> "running" (only with nohang) | "exited", code,
 * pid | "signaled", signal number, pid. The pid that ended comes third, for
 * pid -1 (any child). */
static int l_waitpid(lua_State *L) {
    lua_Integer pid = luaL_checkinteger(L, 1);
    int nohang = lua_toboolean(L, 2);
    int status = 0;
    pid_t r;
    do {
        r = waitpid((pid_t)pid, &status, nohang ? WNOHANG : 0);
    } while (r < 0 && errno == EINTR);
    if (r < 0) return syserror(L, "waitpid", lua_pushfstring(L, "waiting for process %I failed", pid), errno);
    if (r == 0) {
        lua_pushliteral(L, "running");
        return 1;
    }
    if (WIFEXITED(status)) {
        lua_pushliteral(L, "exited");
        lua_pushinteger(L, WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        lua_pushliteral(L, "signaled");
        lua_pushinteger(L, WTERMSIG(status));
    } else { /* stopped or continued: only reported with WUNTRACED / WCONTINUED */
        lua_pushliteral(L, "other");
        lua_pushinteger(L, status);
    }
    lua_pushinteger(L, (lua_Integer)r);
    return 3;
}

static const struct {
    const char *name;
    int number;
} signal_names[] = {
    /* the first four can be caught with catch_signal, in signal_flags' order */
    {"INT", SIGINT},   {"TERM", SIGTERM}, {"HUP", SIGHUP},   {"USR1", SIGUSR1}, {"USR2", SIGUSR2},
    {"KILL", SIGKILL}, {"QUIT", SIGQUIT}, {"ALRM", SIGALRM}, {"PIPE", SIGPIPE}, {"CHLD", SIGCHLD},
    {"STOP", SIGSTOP}, {"CONT", SIGCONT},
};
#define CATCHABLE 4
#define NSIGNAMES (sizeof signal_names / sizeof signal_names[0])

/* Index into signal_names of the name at arg ("TERM" or "SIGTERM"); only
 * the first CATCHABLE when catchable. */
static int checksigname(lua_State *L, int arg, int catchable) {
    const char *name = luaL_checkstring(L, arg);
    const char *bare = strncmp(name, "SIG", 3) == 0 ? name + 3 : name;
    size_t n = catchable ? CATCHABLE : NSIGNAMES;
    for (size_t i = 0; i < n; i++)
        if (strcmp(bare, signal_names[i].name) == 0) return (int)i;
    if (catchable)
        return luaL_argerror(L, arg, lua_pushfstring(L, "expected a signal name INT, TERM, HUP or USR1, got '%s'", name));
    return luaL_argerror(L, arg, lua_pushfstring(L, "expected a signal number or name (TERM, KILL, INT, HUP, USR1, ...), got '%s'", name));
}

/* kill(pid, sig): sig is a number or a name ("TERM", "KILL", "INT", ...). */
static int l_kill(lua_State *L) {
    lua_Integer pid = luaL_checkinteger(L, 1);
    int sig;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Integer s = luaL_checkinteger(L, 2);
        if (s < 0 || s > 64) return luaL_argerror(L, 2, lua_pushfstring(L, "expected a signal number in 0..64, got %I", s));
        sig = (int)s;
    } else {
        sig = signal_names[checksigname(L, 2, 0)].number;
    }
    if (kill((pid_t)pid, sig) != 0)
        return syserror(L, "kill", lua_pushfstring(L, "sending signal %d to process %I failed", sig, pid), errno);
    return 0;
}

/* exit([code]): _exit, so no atexit handler runs and no stdio buffer is
 * flushed (a child must not write its copy of the parent's pending output;
 * a child that printed flushes itself first). true is 0, false is 1. */
static int l_exit(lua_State *L) {
    int code;
    if (lua_isboolean(L, 1)) code = lua_toboolean(L, 1) ? 0 : 1;
    else code = (int)(luaL_optinteger(L, 1, 0) & 0xff);
    _exit(code);
    return 0;
}

static int l_getpid(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

/* die_with_parent(parent_pid): from now on this process is killed
 * (SIGKILL) when the thread that forked it ends, so that a worker never
 * outlives a supervisor killed with -9. parent_pid is the supervisor's pid
 * as it read it before the fork: when the supervisor is already gone, this
 * process is killed at once. */
static int l_die_with_parent(lua_State *L) {
    lua_Integer parent = luaL_checkinteger(L, 1);
    if (parent <= 1) return luaL_argerror(L, 1, "expected the parent's pid (> 1)");
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return syserror(L, "die_with_parent", "prctl failed", errno);
    if ((lua_Integer)getppid() != parent) raise(SIGKILL);
    return 0;
}

/* sleep(seconds): fractional, resumed after signals for the time left. */
static int l_sleep(lua_State *L) {
    lua_Number s = luaL_checknumber(L, 1);
    if (!(s >= 0) || s > 1e9) return luaL_argerror(L, 1, lua_pushfstring(L, "expected seconds in 0..1e9, got %f", s));
    struct timespec req, rem;
    req.tv_sec = (time_t)s;
    req.tv_nsec = (long)((s - (lua_Number)req.tv_sec) * 1e9);
    if (req.tv_nsec > 999999999L) req.tv_nsec = 999999999L;
    while (nanosleep(&req, &rem) != 0) {
        if (errno != EINTR) return syserror(L, "sleep", "nanosleep failed", errno);
        req = rem;
    }
    return 0;
}

static int pushclock(lua_State *L, clockid_t id, const char *fn) {
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0) return syserror(L, fn, "clock_gettime failed", errno);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

/* now() -> monotonic seconds (for intervals); time() -> wall-clock seconds. */
static int l_now(lua_State *L) { return pushclock(L, CLOCK_MONOTONIC, "now"); }
static int l_time(lua_State *L) { return pushclock(L, CLOCK_REALTIME, "time"); }

/* The file descriptor at arg: a number, or an open Lua file handle. */
static int fd_or_file(lua_State *L, int arg, const char *fn) {
    luaL_Stream *s = luaL_testudata(L, arg, LUA_FILEHANDLE);
    if (!s) return checkfd(L, arg);
    if (s->closef == NULL) return luaL_argerror(L, arg, "file is closed");
    int fd = fileno(s->f);
    if (fd < 0) return syserror(L, fn, "fileno failed", errno);
    return fd;
}

/* isatty(fd | file) -> boolean. */
static int l_isatty(lua_State *L) {
    lua_pushboolean(L, isatty(fd_or_file(L, 1, "isatty")));
    return 1;
}

/* terminal_width([fd | file]) -> columns of the terminal on that
 * descriptor (stderr by default), or nil when it is not a terminal. */
static int l_terminal_width(lua_State *L) {
    int fd = lua_isnoneornil(L, 1) ? STDERR_FILENO : fd_or_file(L, 1, "terminal_width");
    struct winsize ws;
    if (!isatty(fd) || ioctl(fd, TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, ws.ws_col);
    return 1;
}

/* ---- signals ----------------------------------------------------------- */

/* Async-signal-safe: sets the flag of the signal and nothing else. */
static void on_signal(int sig) {
    for (int i = 0; i < CATCHABLE; i++)
        if (signal_names[i].number == sig) signal_flags[i] = 1;
}

/* catch_signal(name): from now on the signal only sets a flag that
 * signal_pending reads (names INT, TERM, HUP, USR1). */
static int l_catch_signal(lua_State *L) {
    int i = checksigname(L, 1, 1);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(signal_names[i].number, &sa, NULL) != 0)
        return syserror(L, "catch_signal", lua_pushfstring(L, "installing a handler for SIG%s failed", signal_names[i].name), errno);
    return 0;
}

/* signal_pending(name [, clear]) -> whether the signal came since it was
 * caught (or last cleared); clear resets the flag. */
static int l_signal_pending(lua_State *L) {
    int i = checksigname(L, 1, 1);
    int pending = signal_flags[i] != 0;
    if (pending && lua_toboolean(L, 2)) signal_flags[i] = 0;
    lua_pushboolean(L, pending);
    return 1;
}

/* default_signal(name): the default action again; the flag is cleared. */
static int l_default_signal(lua_State *L) {
    int i = checksigname(L, 1, 1);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    if (sigaction(signal_names[i].number, &sa, NULL) != 0)
        return syserror(L, "default_signal", lua_pushfstring(L, "restoring SIG%s failed", signal_names[i].name), errno);
    signal_flags[i] = 0;
    return 0;
}

/* ---- messages and tensors ---------------------------------------------- */

/* write_message(fd, string): one frame, u64 length + bytes. */
static int l_write_message(lua_State *L) {
    int fd = checkfd(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    if ((uint64_t)len > LPNX_SYS_MAX_FRAME)
        return luaL_error(L, "lpnx.sys.write_message: message of %I bytes exceeds the limit of %I bytes", (lua_Integer)len,
                          (lua_Integer)LPNX_SYS_MAX_FRAME);
    unsigned char head[8];
    put_u64(head, (uint64_t)len);
    if (write_all(fd, head, sizeof head) != 0 || write_all(fd, s, len) != 0)
        return syserror(L, "write_message", "write failed", errno);
    return 0;
}

/* read_message(fd) -> string, or nil at a clean end of file. The buffer is
 * Lua's, so it is freed even when a read error is raised. */
static int l_read_message(lua_State *L) {
    int fd = checkfd(L, 1);
    uint64_t len;
    if (!read_length(L, "read_message", fd, &len)) {
        lua_pushnil(L);
        return 1;
    }
    if (len > LPNX_SYS_MAX_FRAME)
        return luaL_error(L, "lpnx.sys.read_message: corrupt message: length %s exceeds the limit of %I bytes", pushu64(L, len),
                          (lua_Integer)LPNX_SYS_MAX_FRAME);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, (size_t)len);
    read_body(L, "read_message", fd, p, (size_t)len);
    luaL_pushresultsize(&b, (size_t)len);
    return 1;
}

/* write_tensor(fd, t): one tensor frame written straight from the tensor's
 * data (a strided tensor is first copied to a contiguous one). */
static int l_write_tensor(lua_State *L) {
    int fd = checkfd(L, 1);
    lpnx_Tensor *t = lpnx_checktensor(L, 2);
    if (!t->storage) return luaL_argerror(L, 2, "tensor was closed");
    lua_settop(L, 2);
    t = lpnx_checkcontiguous(L, 2); /* a copy pushed at 3 when t is strided */
    size_t numel = lpnx_tensor_numel(t);
    uint64_t body = 8 + 8 * (uint64_t)t->ndim + 4 * (uint64_t)numel;
    if (body > LPNX_SYS_MAX_FRAME)
        return luaL_error(L, "lpnx.sys.write_tensor: tensor frame of %I bytes exceeds the limit of %I bytes", (lua_Integer)body,
                          (lua_Integer)LPNX_SYS_MAX_FRAME);
    unsigned char head[16 + 8 * LPNX_MAXDIM]; /* length, ndim, sizes */
    put_u64(head, body);
    put_u64(head + 8, (uint64_t)t->ndim);
    for (int d = 0; d < t->ndim; d++) put_u64(head + 16 + 8 * d, (uint64_t)t->size[d]);
    if (write_all(fd, head, 16 + 8 * (size_t)t->ndim) != 0 ||
        (numel > 0 && write_all(fd, lpnx_tensor_data(t), numel * sizeof(float)) != 0))
        return syserror(L, "write_tensor", "write failed", errno);
    return 0;
}

/* read_tensor(fd) -> tensor, or nil at a clean end of file. ndim, sizes and
 * the byte count are checked against each other before the tensor is
 * allocated; the data is read straight into it. */
static int l_read_tensor(lua_State *L) {
    int fd = checkfd(L, 1);
    uint64_t body;
    if (!read_length(L, "read_tensor", fd, &body)) {
        lua_pushnil(L);
        return 1;
    }
    if (body < 8 || body > LPNX_SYS_MAX_FRAME)
        return luaL_error(L, "lpnx.sys.read_tensor: corrupt tensor frame: length %s is not in 8..%I", pushu64(L, body),
                          (lua_Integer)LPNX_SYS_MAX_FRAME);
    unsigned char head[8 + 8 * LPNX_MAXDIM]; /* ndim, sizes */
    read_body(L, "read_tensor", fd, head, 8);
    uint64_t ndim = get_u64(head);
    if (ndim > LPNX_MAXDIM)
        return luaL_error(L, "lpnx.sys.read_tensor: corrupt tensor frame: %s dims (expected 0 to %d)", pushu64(L, ndim),
                          LPNX_MAXDIM);
    if (body < 8 + 8 * ndim)
        return luaL_error(L, "lpnx.sys.read_tensor: corrupt tensor frame: length %I is too short for %d sizes", (lua_Integer)body,
                          (int)ndim);
    read_body(L, "read_tensor", fd, head + 8, 8 * (size_t)ndim);
    int64_t size[LPNX_MAXDIM];
    size_t numel;
    for (uint64_t d = 0; d < ndim; d++) {
        int64_t s = (int64_t)get_u64(head + 8 + 8 * d); /* two's complement on every POSIX system */
        if (s < 0 || s > (int64_t)LPNX_SYS_MAX_FRAME)
            return luaL_error(L, "lpnx.sys.read_tensor: corrupt tensor frame: size %I of dim %d", (lua_Integer)s, (int)d + 1);
        size[d] = s;
    }
    if (lpnx_numel_of((int)ndim, size, &numel) != LPNX_OK || body != 8 + 8 * ndim + 4 * (uint64_t)numel) {
        char shape[160];
        lpnx_shape_str(shape, sizeof shape, (int)ndim, size);
        return luaL_error(L, "lpnx.sys.read_tensor: corrupt tensor frame: length %I does not fit a %s tensor", (lua_Integer)body,
                          shape);
    }
    lpnx_Tensor *t = lpnx_pushnew(L, (int)ndim, size, 0);
    if (numel > 0) read_body(L, "read_tensor", fd, lpnx_tensor_data(t), numel * sizeof(float));
    return 1;
}

/* ---- durable writes ------------------------------------------------------ */

/* fsync_path(path): flushes a file or a folder (its entries) to disk. */
static int l_fsync_path(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int fd;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return syserror(L, "fsync_path", lua_pushfstring(L, "cannot open %s", path), errno);
    if (fsync(fd) != 0) {
        int err = errno;
        close(fd);
        return syserror(L, "fsync_path", lua_pushfstring(L, "fsync %s failed", path), err);
    }
    if (close(fd) != 0 && errno != EINTR) return syserror(L, "fsync_path", lua_pushfstring(L, "closing %s failed", path), errno);
    return 0;
}

static const luaL_Reg functions[] = {
    {"fork", l_fork},
    {"pipe", l_pipe},
    {"close", l_close},
    {"write_message", l_write_message},
    {"read_message", l_read_message},
    {"write_tensor", l_write_tensor},
    {"read_tensor", l_read_tensor},
    {"waitpid", l_waitpid},
    {"kill", l_kill},
    {"exit", l_exit},
    {"getpid", l_getpid},
    {"die_with_parent", l_die_with_parent},
    {"sleep", l_sleep},
    {"now", l_now},
    {"time", l_time},
    {"isatty", l_isatty},
    {"terminal_width", l_terminal_width},
    {"catch_signal", l_catch_signal},
    {"signal_pending", l_signal_pending},
    {"default_signal", l_default_signal},
    {"fsync_path", l_fsync_path},
    {NULL, NULL},
};

/* Adds lpnx.sys to the module table on top of the stack, with
 * sys.signals = {INT = 2, TERM = 15, ...} (the names kill accepts). */
void lpnx_open_sys(lua_State *L) {
    luaL_newlib(L, functions);
    lua_createtable(L, 0, (int)NSIGNAMES);
    for (size_t i = 0; i < NSIGNAMES; i++) {
        lua_pushinteger(L, signal_names[i].number);
        lua_setfield(L, -2, signal_names[i].name);
    }
    lua_setfield(L, -2, "signals");
    lua_setfield(L, -2, "sys");
}
