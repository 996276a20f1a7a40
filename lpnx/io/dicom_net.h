/* DICOM networking through DCMTK's dcmnet: a plain C interface over the
 * C++ shim in dicom_net.cpp. No Lua here and no C++ in the interface:
 * every function catches what DCMTK throws and checks every condition it
 * returns; failures come back as a non-zero return with the reason in the
 * caller's buffer. Nothing aborts, exits or prints (DCMTK's log is
 * captured, dcm_util.hpp).
 *
 * A storage SCP runs in a thread of its own (one per server) with every
 * signal blocked, so that signals reach the caller's threads; it answers
 * C-ECHO and C-STORE and reports what happened as events in a queue that
 * the caller drains (lpnx_net_next_event) and may sleep on (lpnx_net_wait):
 *
 *     lpnx_net_server *s = NULL;
 *     if (lpnx_net_listen(&s, &options, err, sizeof err) != 0) fail(err);
 *     lpnx_net_event ev;
 *     while (lpnx_net_wait(s, 1.0))
 *         while (lpnx_net_next_event(s, &ev)) handle(&ev);
 *     lpnx_net_free(s);          // stops the thread, frees everything
 *
 * Every C-STORE is made durable before it is answered: the data set, as
 * received (its transfer syntax and bytes unchanged), behind a DICOM meta
 * header, goes to a temporary file ".tmp-XXXXXX" in the spool folder,
 * which is fsync'ed and renamed (never over an existing file) to
 * "<seq>_<SOPInstanceUID>.dcm" (seq: 12 digits, one more than the largest
 * in the folder when listening began, then counting arrivals), then the
 * folder is fsync'ed; only then is success (0x0000) sent. Any failure
 * removes the temporary file and answers 0xA700 (out of resources: the
 * file could not be written), 0xC000 (cannot understand: the data set does
 * not parse, or lacks its SOP class or instance UID) or 0xA900 (the data
 * set's SOP class or instance UID is not the command's).
 *
 * The SCU side (lpnx_net_store, lpnx_net_echo) runs in the calling thread,
 * synchronously. DCMTK ignores SIGPIPE process-wide once its network layer
 * is first used (dul.cc); the calls here also block SIGPIPE in the calling
 * thread while they run. */
#ifndef LPNX_IO_DICOM_NET_H
#define LPNX_IO_DICOM_NET_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* the storage SCP                                                     */
/* ------------------------------------------------------------------ */

typedef struct lpnx_net_server lpnx_net_server;

typedef struct {
    const char *aet;   /* the called AE title this node answers to: 1..16 printable ASCII, no backslash */
    const char *host;  /* IPv4 address to bind, NULL for every interface (0.0.0.0) */
    int port;          /* 0..65535; 0 lets the system choose (lpnx_net_port tells which) */
    const char *spool; /* an existing folder the files are written to */
    /* NULL, or nallow entries "AET" (that calling AE title from anywhere)
     * or "AET@HOST" (from that IPv4 address or host name, resolved when
     * listening begins). When given, associations from anyone else are
     * rejected (calling AE title not recognized). */
    const char *const *allow;
    size_t nallow;
    int timeout; /* seconds, >= 1: ACSE and DIMSE timeout, and how long close waits for a sender */
} lpnx_net_listen_options;

/* Binds the port, checks the spool folder (writable: a temporary file is
 * made there and removed), removes temporary files that an earlier
 * server killed mid-write left in it, and starts the thread. On failure
 * returns non-zero with *out NULL and the reason in err, e.g.
 * "port 11112: Address already in use", "spool /x: No such file or directory". */
int lpnx_net_listen(lpnx_net_server **out, const lpnx_net_listen_options *options, char *err, size_t errlen);

/* The port the server is bound to. */
int lpnx_net_port(const lpnx_net_server *s);

enum {
    LPNX_NET_ASSOCIATION, /* an association was accepted */
    LPNX_NET_REJECTED,    /* an association was rejected (reason) */
    LPNX_NET_ECHO,        /* a C-ECHO was answered */
    LPNX_NET_RECEIVED,    /* a C-STORE was stored (path, bytes) and answered with success */
    LPNX_NET_FAILED,      /* a C-STORE was answered with a failure status (status, reason) */
    LPNX_NET_ERROR        /* anything else worth a log line: a network error, an aborted association */
};

/* One event. Strings are NUL-terminated, empty when unknown or not part
 * of the event's kind. */
typedef struct {
    int kind;               /* LPNX_NET_* */
    char calling_aet[17];
    char called_aet[17];
    char peer[64];          /* the sender's IPv4 address */
    char sop_class_uid[65];
    char sop_instance_uid[65];
    char transfer_syntax[65];
    char path[4096];        /* received: the spool file */
    char reason[512];
    long long bytes;        /* received: the file's size */
    int status;             /* failed: the DIMSE status sent; -1 otherwise */
} lpnx_net_event;

/* Events queued now (the count only grows until they are taken). */
size_t lpnx_net_pending(lpnx_net_server *s);

/* Takes the oldest event into *ev; 0 when there is none. Events queued
 * before the server was closed stay until they are taken. */
int lpnx_net_next_event(lpnx_net_server *s, lpnx_net_event *ev);

/* Sleeps until an event is queued or seconds have passed (at most a day);
 * 1 when events are pending, 0 otherwise. */
int lpnx_net_wait(lpnx_net_server *s, double seconds);

/* Stops listening and waits for the thread to end: an association in
 * progress is finished, or aborted when the sender is silent for the
 * timeout. Safe twice; NULL is fine. */
void lpnx_net_close(lpnx_net_server *s);

/* Closes the server and frees it; NULL is fine. */
void lpnx_net_free(lpnx_net_server *s);

/* ------------------------------------------------------------------ */
/* the SCU side                                                        */
/* ------------------------------------------------------------------ */

typedef struct {
    const char *host;   /* host name or IPv4 address */
    int port;           /* 1..65535 */
    const char *aet;    /* our (calling) AE title */
    const char *called; /* the peer's (called) AE title */
    int timeout;        /* seconds, >= 1: connection, ACSE and DIMSE timeout */
} lpnx_net_peer;

/* What became of one file sent by lpnx_net_store. */
typedef struct {
    int sent;           /* 1 when the peer answered (status is its answer) */
    int status;         /* the C-STORE response status */
    int ok;             /* success or warning (0x0000, 0xB000, 0xB006, 0xB007, any 0xBxxx) */
    char sop_instance_uid[65]; /* empty when the file could not be read */
    char reason[512];   /* when !ok */
} lpnx_net_store_result;

/* Sends files[0..n-1] in one association, each in the transfer syntax it
 * is stored in (uncompressed ones may also go as explicit or implicit VR
 * little endian, whichever the peer accepts). Returns 0 with results[i]
 * filled for every file in order (a file that cannot be read, or for
 * which the peer accepted no presentation context, is not sent and gets
 * ok = 0 with the reason; the others are still sent; a file whose
 * association fails part way gets ok = 0 with that reason, as do the ones
 * after it); -1 when no association could be made (refused connection,
 * rejection, timeout, or more than the 128 presentation contexts of one
 * association needed), with "host:port: reason" in err. */
int lpnx_net_store(const lpnx_net_peer *peer, const char *const *files, size_t n, lpnx_net_store_result *results,
                   char *err, size_t errlen);

/* A C-ECHO: 0 when the peer answered success; -1 with "host:port: reason" otherwise. */
int lpnx_net_echo(const lpnx_net_peer *peer, char *err, size_t errlen);

/* Whether s is a valid AE title (1..16 characters of printable ASCII,
 * no backslash, not only spaces). */
int lpnx_net_valid_aet(const char *s);

#ifdef __cplusplus
}
#endif

#endif /* LPNX_IO_DICOM_NET_H */
