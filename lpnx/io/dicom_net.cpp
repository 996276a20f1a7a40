/* DICOM networking through DCMTK's dcmnet, behind the plain C interface
 * of dicom_net.h. Every entry point catches every exception (net_guarded)
 * and every OFCondition is checked; DCMTK's log is captured per thread
 * (dcm_util.hpp), so nothing reaches the console.
 *
 * The storage SCP is storescp's loop written for a thread: ASC/DIMSE
 * calls on one association at a time. Its listening socket is lpnx's own
 * (bound to the caller's address, port 0 allowed), put in the place of the
 * one ASC_initializeNetwork makes (which binds every interface); the
 * thread sleeps in poll() on it and on a pipe that close() writes to, so
 * that closing an idle server is immediate. Data sets are received as raw
 * bytes (DIMSE_receiveDataSetInFile into memory), parsed by DCMTK only to
 * be checked, and written behind a meta header exactly as they arrived, so
 * the transfer syntax (and every byte) is kept.
 *
 * State: each server owns its DCMTK network, socket, thread, counter and
 * event queue; the queue is shared with the caller's thread under a mutex.
 * The only process-wide settings are DCMTK's (set once, under a
 * std::call_once): no reverse DNS look-ups of peers (dcmDisableGethostbyaddr),
 * and DCMTK's own SIGPIPE = SIG_IGN on its first network use. Parsing a data
 * set here shares nothing with lpnx.dicom.read on another thread but DCMTK's
 * data dictionary, which DCMTK locks. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* renameat2, mkostemp, pipe2 */
#endif

#include "dicom_net.h"
#include "dcm_util.hpp"

#include <dcmtk/config/osconfig.h>

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcostrma.h>
#include <dcmtk/dcmdata/dcostrmb.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dimse.h>
#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/dcmnet/dulstruc.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

namespace {

using namespace lpnx_dcm; /* the shared parts of the DCMTK shims */

/* ------------------------------------------------------------------ */
/* set-up and guards                                                   */
/* ------------------------------------------------------------------ */

void setup_net() {
    dcmDisableGethostbyaddr.set(OFTrue); /* peers by address: no DNS look-up in the SCP's path */
}

lpnx_dcm::Init net_init{setup_net, "could not initialise DCMTK's network layer"};

/* The frame of every C entry point: the set-up, then body() (0 or -1 with
 * err set); whatever is thrown becomes -1 with a reason. */
template <class Body> int net_guarded(char *err, size_t errlen, Body body) {
    try {
        if (!ensure_init(net_init, err, errlen)) return -1;
        return body();
    } catch (const std::bad_alloc &) {
        set_err(err, errlen, "not enough memory");
    } catch (...) {
        set_err(err, errlen, "unexpected error inside DCMTK");
    }
    return -1;
}

/* Copies s into a fixed field, cut short if need be. */
template <size_t N> void put(char (&to)[N], const std::string &s) {
    size_t n = std::min(s.size(), N - 1);
    memcpy(to, s.data(), n);
    to[n] = '\0';
}

/* A condition as text: DCMTK's dump of it (sub-conditions included) on one line. */
std::string text_of(const OFCondition &c) {
    OFString s;
    DimseCondition::dump(s, c);
    std::string t;
    for (const char *c = s.c_str(); *c; c++) {
        /* DCMTK's "0006:031c " module:code prefixes say nothing to a reader */
        if ((c == s.c_str() || c[-1] == '\n') && strlen(c) > 10 && c[4] == ':' && c[9] == ' ' &&
            strspn(c, "0123456789abcdefABCDEF") == 4 && strspn(c + 5, "0123456789abcdefABCDEF") == 4) {
            c += 9;
            continue;
        }
        t += (*c == '\n' || *c == '\r') ? ' ' : *c;
    }
    return t;
}

/* Blocks SIGPIPE in the calling thread for the lifetime of the object;
 * a SIGPIPE raised meanwhile (and not pending before) is consumed, so a
 * peer that closes its socket can never end the process. */
class NoSigpipe {
public:
    NoSigpipe() {
        sigset_t pending;
        sigemptyset(&pipe_only);
        sigaddset(&pipe_only, SIGPIPE);
        sigemptyset(&pending);
        sigpending(&pending);
        was_pending = sigismember(&pending, SIGPIPE) == 1;
        blocked = pthread_sigmask(SIG_BLOCK, &pipe_only, &old) == 0;
    }
    ~NoSigpipe() {
        if (!blocked) return;
        if (!was_pending) {
            sigset_t pending;
            sigemptyset(&pending);
            if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
                struct timespec zero = {0, 0};
                sigtimedwait(&pipe_only, nullptr, &zero);
            }
        }
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }
    NoSigpipe(const NoSigpipe &) = delete;
    NoSigpipe &operator=(const NoSigpipe &) = delete;

private:
    sigset_t pipe_only, old;
    bool was_pending = false, blocked = false;
};

/* ------------------------------------------------------------------ */
/* transfer syntaxes and SOP classes                                   */
/* ------------------------------------------------------------------ */

/* What the SCP accepts, in no order of preference (the sender's order
 * decides). HTJ2K is accepted only when the DCMTK linked in knows it:
 * DCMTK 3.6.7's DIMSE layer refuses every message on a presentation
 * context whose transfer syntax it does not know (getTransferSyntax in
 * DIMSE_receiveCommand), so accepting one would abort the association
 * at the first C-STORE instead of letting the sender pick another. */
const char *const accepted_syntaxes[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
    UID_JPEGProcess1TransferSyntax,          /* .4.50 baseline */
    UID_JPEGProcess2_4TransferSyntax,        /* .4.51 extended */
    UID_JPEGProcess14TransferSyntax,         /* .4.57 lossless */
    UID_JPEGProcess14SV1TransferSyntax,      /* .4.70 lossless, first-order prediction */
    UID_JPEGLSLosslessTransferSyntax,        /* .4.80 */
    UID_JPEGLSLossyTransferSyntax,           /* .4.81 */
    UID_JPEG2000LosslessOnlyTransferSyntax,  /* .4.90 */
    UID_JPEG2000TransferSyntax,              /* .4.91 */
    "1.2.840.10008.1.2.4.201",               /* HTJ2K lossless */
    "1.2.840.10008.1.2.4.202",               /* HTJ2K lossless, RPCL */
    "1.2.840.10008.1.2.4.203",               /* HTJ2K */
    UID_RLELosslessTransferSyntax,           /* .5 */
};

bool syntax_accepted(const char *uid) {
    for (const char *a : accepted_syntaxes)
        if (strcmp(a, uid) == 0) return DcmXfer(uid).getXfer() != EXS_Unknown;
    return false;
}

bool storage_class(const char *uid) {
    for (int i = 0; i < numberOfDcmAllStorageSOPClassUIDs; i++)
        if (dcmAllStorageSOPClassUIDs[i] && strcmp(dcmAllStorageSOPClassUIDs[i], uid) == 0) return true;
    return false;
}

/* Transfer syntaxes whose data sets DCMTK writes in any other of them. */
bool uncompressed(E_TransferSyntax x) {
    return x == EXS_LittleEndianExplicit || x == EXS_LittleEndianImplicit || x == EXS_BigEndianExplicit ||
           x == EXS_DeflatedLittleEndianExplicit;
}

/* A UID fit to be part of a file name: 1..64 digits and dots. */
bool uid_chars(const std::string &s) {
    if (s.empty() || s.size() > 64) return false;
    for (char c : s)
        if (!(c == '.' || (c >= '0' && c <= '9'))) return false;
    return true;
}

/* ------------------------------------------------------------------ */
/* the server                                                          */
/* ------------------------------------------------------------------ */

/* A DcmConsumer that appends to a byte vector, for raw data sets. Up to
 * max bytes; beyond (or out of memory) it stops taking, which DIMSE
 * answers by discarding the rest of the data set (out of resources). */
class MemoryConsumer : public DcmConsumer {
public:
    explicit MemoryConsumer(size_t max_) : max(max_) {}
    OFBool good() const override { return ok; }
    OFCondition status() const override { return ok ? EC_Normal : EC_MemoryExhausted; }
    OFBool isFlushed() const override { return OFTrue; }
    offile_off_t avail() const override { return 2147483647L; }
    offile_off_t write(const void *buf, offile_off_t buflen) override {
        if (!ok || buflen <= 0) return 0;
        try {
            if (bytes.size() + (size_t)buflen > max) {
                ok = false;
                too_large = true;
                return 0;
            }
            const char *p = static_cast<const char *>(buf);
            bytes.insert(bytes.end(), p, p + buflen);
        } catch (...) {
            ok = false;
            return 0;
        }
        return buflen;
    }
    void flush() override {}
    std::vector<char> bytes;
    bool ok = true, too_large = false;

private:
    size_t max;
};

class MemoryStream : public DcmOutputStream {
public:
    explicit MemoryStream(size_t max) : DcmOutputStream(&consumer), consumer(max) {}
    MemoryConsumer consumer; /* DcmOutputStream only keeps its address */
};

/* The largest data set a C-STORE may carry (raw bytes held in memory). */
const size_t MAX_DATA_SET = (size_t)4 << 30;

struct AllowEntry {
    std::string aet;
    bool any_host = true;
    std::vector<std::string> addresses; /* IPv4, dotted */
};

/* What one association is about, for events. */
struct Peer {
    std::string calling, called, address;
};

}  // namespace

struct lpnx_net_server {
    /* set by listen, read-only while the thread runs */
    std::string aet, spool;
    std::vector<AllowEntry> allow;
    bool has_allow = false;
    int timeout = 30;
    int port = 0;
    T_ASC_Network *net = nullptr;
    int listen_fd = -1;   /* owned by net once it is in place */
    int wake[2] = {-1, -1};
    pthread_t thread{};
    bool thread_started = false;
    std::atomic<bool> stop{false};
    unsigned long long seq = 1; /* the next file's number; the thread's own */

    /* shared with the caller's thread */
    std::mutex mu;
    std::condition_variable cv;
    std::deque<lpnx_net_event> events;
    bool closed = false;
};

namespace {

/* Queues an event and wakes a waiting caller. */
void emit(lpnx_net_server *s, const lpnx_net_event &ev) {
    try {
        std::lock_guard<std::mutex> lock(s->mu);
        s->events.push_back(ev);
    } catch (...) {
        return; /* out of memory: the event is lost, the server goes on */
    }
    s->cv.notify_all();
}

lpnx_net_event make_event(int kind, const Peer *p) {
    lpnx_net_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = kind;
    ev.status = -1;
    if (p) {
        put(ev.calling_aet, p->calling);
        put(ev.called_aet, p->called);
        put(ev.peer, p->address);
    }
    return ev;
}

void emit_error(lpnx_net_server *s, const Peer *p, const std::string &reason) {
    lpnx_net_event ev = make_event(LPNX_NET_ERROR, p);
    put(ev.reason, reason);
    emit(s, ev);
}

/* ---- the spool folder ---- */

const char TEMP_PREFIX[] = ".tmp-";

/* ".tmp-" + six letters or digits, as mkstemp fills them. */
bool is_temp_name(const char *name) {
    if (strncmp(name, TEMP_PREFIX, sizeof TEMP_PREFIX - 1) != 0) return false;
    const char *x = name + sizeof TEMP_PREFIX - 1;
    if (strlen(x) != 6) return false;
    for (; *x; x++)
        if (!((*x >= 'a' && *x <= 'z') || (*x >= 'A' && *x <= 'Z') || (*x >= '0' && *x <= '9'))) return false;
    return true;
}

/* The seq of a spool file name "NNNNNNNNNNNN_*.dcm", or 0. */
unsigned long long seq_of(const char *name) {
    size_t n = strlen(name);
    if (n < 17 || name[12] != '_' || strcmp(name + n - 4, ".dcm") != 0) return 0;
    unsigned long long v = 0;
    for (int i = 0; i < 12; i++) {
        if (name[i] < '0' || name[i] > '9') return 0;
        v = v * 10 + (unsigned long long)(name[i] - '0');
    }
    return v;
}

/* Finds the largest seq in the folder and removes the temporary files a
 * killed server left behind (those no live writer holds locked). */
bool scan_spool(lpnx_net_server *s, char *err, size_t errlen) {
    DIR *dir = opendir(s->spool.c_str());
    if (!dir) {
        set_err(err, errlen, "spool %s: %s", s->spool.c_str(), strerror(errno));
        return false;
    }
    unsigned long long top = 0;
    int dfd = dirfd(dir);
    struct dirent *e;
    while ((e = readdir(dir)) != nullptr) {
        top = std::max(top, seq_of(e->d_name));
        if (!is_temp_name(e->d_name)) continue;
        int fd = openat(dfd, e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0)
            unlinkat(dfd, e->d_name, 0);
        close(fd);
    }
    closedir(dir);
    s->seq = top + 1;
    return true;
}

/* Checks that the spool is a folder we can create files in. */
bool check_spool(const std::string &spool, char *err, size_t errlen) {
    struct stat st;
    if (stat(spool.c_str(), &st) != 0) {
        set_err(err, errlen, "spool %s: %s", spool.c_str(), strerror(errno));
        return false;
    }
    if (!S_ISDIR(st.st_mode)) {
        set_err(err, errlen, "spool %s: not a folder", spool.c_str());
        return false;
    }
    std::string probe = spool + "/" + TEMP_PREFIX + "XXXXXX";
    int fd = mkostemp(&probe[0], O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errlen, "spool %s: cannot create files in it (%s)", spool.c_str(), strerror(errno));
        return false;
    }
    close(fd);
    unlink(probe.c_str());
    return true;
}

bool write_all(int fd, const char *p, size_t n, int *e) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            *e = errno;
            return false;
        }
        if (w == 0) {
            *e = EIO;
            return false;
        }
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* The file meta information (PS3.10 7.1), preamble and "DICM" included,
 * as bytes: written by DCMTK (explicit VR little endian, group length
 * first). */
bool meta_header(const std::string &sop_class, const std::string &sop_instance, const char *ts,
                 const std::string &source_aet, std::vector<char> &out, std::string &why) {
    DcmMetaInfo meta;
    const Uint8 version[2] = {0, 1};
    OFCondition c = meta.putAndInsertUint8Array(DCM_FileMetaInformationVersion, version, 2);
    if (c.good()) c = meta.putAndInsertString(DCM_MediaStorageSOPClassUID, sop_class.c_str());
    if (c.good()) c = meta.putAndInsertString(DCM_MediaStorageSOPInstanceUID, sop_instance.c_str());
    if (c.good()) c = meta.putAndInsertString(DCM_TransferSyntaxUID, ts);
    if (c.good()) c = meta.putAndInsertString(DCM_ImplementationClassUID, OFFIS_IMPLEMENTATION_CLASS_UID);
    if (c.good()) c = meta.putAndInsertString(DCM_ImplementationVersionName, OFFIS_DTK_IMPLEMENTATION_VERSION_NAME);
    if (c.good() && !source_aet.empty())
        c = meta.putAndInsertString(DCM_SourceApplicationEntityTitle, source_aet.c_str());
    Uint32 group = 0;
    for (unsigned long i = 0; c.good() && i < meta.card(); i++)
        group += meta.getElement(i)->calcElementLength(EXS_LittleEndianExplicit, EET_ExplicitLength);
    if (c.good()) c = meta.putAndInsertUint32(DCM_FileMetaInformationGroupLength, group);
    if (c.bad()) {
        why = std::string("cannot make the meta header: ") + c.text();
        return false;
    }
    std::vector<char> buf(4096 + group);
    DcmOutputBufferStream stream(buf.data(), (offile_off_t)buf.size());
    meta.transferInit();
    c = meta.write(stream, EXS_LittleEndianExplicit, EET_ExplicitLength, nullptr);
    meta.transferEnd();
    void *data = nullptr;
    offile_off_t len = 0;
    stream.flushBuffer(data, len);
    if (c.bad() || !data || len <= 132) {
        why = std::string("cannot write the meta header: ") + c.text();
        return false;
    }
    out.assign(static_cast<char *>(data), static_cast<char *>(data) + len);
    return true;
}

/* Puts the temporary file in place as spool/<seq>_<uid>.dcm, never over
 * an existing file (the next seq is tried instead). */
bool place(lpnx_net_server *s, const std::string &temp, const std::string &uid, std::string &final_path, int *e) {
    for (int attempt = 0; attempt < 1000; attempt++) {
        char name[128];
        snprintf(name, sizeof name, "/%012llu_", s->seq);
        final_path = s->spool + name + uid + ".dcm";
        int rc = renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, final_path.c_str(), RENAME_NOREPLACE);
        if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) { /* a file system without it */
            rc = link(temp.c_str(), final_path.c_str());
            if (rc == 0) unlink(temp.c_str());
        }
        if (rc == 0) {
            s->seq++;
            return true;
        }
        if (errno != EEXIST) {
            *e = errno;
            return false;
        }
        s->seq++;
    }
    *e = EEXIST;
    return false;
}

/* Writes meta + data into a temporary file, fsyncs it, renames it to its
 * final name and fsyncs the folder. On failure nothing is left and why
 * holds the reason. */
bool store(lpnx_net_server *s, const std::vector<char> &meta, const std::vector<char> &data, const std::string &uid,
           std::string &final_path, std::string &why) {
    std::string temp = s->spool + "/" + TEMP_PREFIX + "XXXXXX";
    int fd = mkostemp(&temp[0], O_CLOEXEC);
    if (fd < 0) {
        why = "cannot create a temporary file in " + s->spool + " (" + strerror(errno) + ")";
        return false;
    }
    (void)flock(fd, LOCK_EX | LOCK_NB); /* a live write is never taken for a leftover */
    int e = 0;
    const char *step = "cannot write";
    bool ok = write_all(fd, meta.data(), meta.size(), &e) && write_all(fd, data.data(), data.size(), &e);
    if (ok && fchmod(fd, 0644) != 0) {
        e = errno;
        ok = false;
        step = "cannot set the permissions of";
    }
    if (ok && fsync(fd) != 0) {
        e = errno;
        ok = false;
        step = "cannot fsync";
    }
    if (close(fd) != 0 && ok) {
        e = errno;
        ok = false;
        step = "cannot close";
    }
    if (!ok) {
        unlink(temp.c_str());
        why = std::string(step) + " " + temp + " (" + strerror(e) + ")";
        return false;
    }
    if (!place(s, temp, uid, final_path, &e)) {
        unlink(temp.c_str());
        why = "cannot rename " + temp + " to " + final_path + " (" + strerror(e) + ")";
        return false;
    }
    int dfd = open(s->spool.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || (fsync(dfd) != 0 && errno != EINVAL)) {
        e = errno;
        if (dfd >= 0) close(dfd);
        unlink(final_path.c_str());
        why = "cannot fsync the folder " + s->spool + " (" + strerror(e) + ")";
        return false;
    }
    close(dfd);
    return true;
}

/* ---- associations ---- */

/* Whether the allow list lets calling in from address. */
bool allowed(const lpnx_net_server *s, const std::string &calling, const std::string &address) {
    if (!s->has_allow) return true;
    for (const AllowEntry &a : s->allow) {
        if (a.aet != calling) continue;
        if (a.any_host) return true;
        for (const std::string &h : a.addresses)
            if (h == address) return true;
    }
    return false;
}

/* Accepts each proposed presentation context whose abstract syntax is
 * Verification or a storage SOP class, with the first transfer syntax the
 * sender lists there that the SCP takes; refuses the others. */
void negotiate(T_ASC_Association *assoc) {
    int n = ASC_countPresentationContexts(assoc->params);
    for (int i = 0; i < n; i++) {
        T_ASC_PresentationContext pc;
        if (ASC_getPresentationContext(assoc->params, i, &pc).bad()) continue;
        bool verification = strcmp(pc.abstractSyntax, UID_VerificationSOPClass) == 0;
        if (!verification && !storage_class(pc.abstractSyntax)) {
            ASC_refusePresentationContext(assoc->params, pc.presentationContextID, ASC_P_ABSTRACTSYNTAXNOTSUPPORTED);
            continue;
        }
        const char *chosen = nullptr;
        for (int k = 0; k < pc.transferSyntaxCount && !chosen; k++) {
            const char *ts = pc.proposedTransferSyntaxes[k];
            if (syntax_accepted(ts) || (verification && strcmp(ts, UID_LittleEndianImplicitTransferSyntax) == 0))
                chosen = ts;
        }
        if (chosen)
            ASC_acceptPresentationContext(assoc->params, pc.presentationContextID, chosen);
        else
            ASC_refusePresentationContext(assoc->params, pc.presentationContextID,
                                          ASC_P_TRANSFERSYNTAXESNOTSUPPORTED);
    }
}

void reject(lpnx_net_server *s, T_ASC_Association *assoc, const Peer &p, T_ASC_RejectParametersReason why,
            const std::string &reason) {
    T_ASC_RejectParameters rej = {ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER, why};
    OFCondition c = ASC_rejectAssociation(assoc, &rej);
    lpnx_net_event ev = make_event(LPNX_NET_REJECTED, &p);
    put(ev.reason, reason);
    emit(s, ev);
    if (c.bad()) emit_error(s, &p, "cannot send the rejection: " + text_of(c));
}

/* First value of a string attribute of the data set, trimmed. */
std::string uid_in(DcmDataset &ds, const DcmTagKey &tag) { return get_string(&ds, tag); }

/* Receives the data set of one C-STORE, checks it, stores it and sends
 * the response. Returns a bad condition when the association cannot go on. */
OFCondition handle_store(lpnx_net_server *s, T_ASC_Association *assoc, T_ASC_PresentationContextID pres_id,
                         T_DIMSE_C_StoreRQ &req, const Peer &p) {
    LogScope log;
    std::string cmd_class = trim(OFString(req.AffectedSOPClassUID));
    std::string cmd_instance = trim(OFString(req.AffectedSOPInstanceUID));
    T_ASC_PresentationContext pc;
    std::string ts;
    if (ASC_findAcceptedPresentationContext(assoc->params, pres_id, &pc).good()) ts = pc.acceptedTransferSyntax;

    MemoryStream raw(MAX_DATA_SET);
    T_ASC_PresentationContextID data_id = 0;
    OFCondition c = DIMSE_receiveDataSetInFile(assoc, DIMSE_NONBLOCKING, s->timeout, &data_id, &raw, nullptr, nullptr);
    Uint16 status = STATUS_Success;
    std::string why;
    if (c == DIMSE_OUTOFRESOURCES) {
        status = STATUS_STORE_Refused_OutOfResources;
        why = raw.consumer.too_large ? "the data set is larger than 4 GiB" : "not enough memory for the data set";
    } else if (c.bad()) {
        lpnx_net_event ev = make_event(LPNX_NET_ERROR, &p);
        put(ev.sop_class_uid, cmd_class);
        put(ev.sop_instance_uid, cmd_instance);
        put(ev.reason, "the association ended while receiving a data set: " + text_of(c));
        emit(s, ev);
        return c;
    } else if (data_id != pres_id) {
        status = STATUS_STORE_Error_CannotUnderstand;
        why = "the data set came on another presentation context than its command";
    }

    /* parse, to check it: the whole data set must be readable */
    std::string sop_class, sop_instance;
    if (status == STATUS_Success) {
        E_TransferSyntax xfer = DcmXfer(ts.c_str()).getXfer();
        DcmDataset ds;
        DcmInputBufferStream in;
        in.setBuffer(raw.consumer.bytes.data(), (offile_off_t)raw.consumer.bytes.size());
        in.setEos();
        ds.transferInit();
        OFCondition pc_ = ds.read(in, xfer == EXS_Unknown ? EXS_LittleEndianExplicit : xfer, EGL_noChange,
                                  DCM_MaxReadLength);
        ds.transferEnd();
        if (pc_.bad() || !in.eos()) {
            status = STATUS_STORE_Error_CannotUnderstand;
            why = std::string("the data set cannot be parsed: ") + (pc_.bad() ? pc_.text() : "bytes left over") +
                  log.detail();
        } else {
            sop_class = uid_in(ds, DCM_SOPClassUID);
            sop_instance = uid_in(ds, DCM_SOPInstanceUID);
            if (sop_class.empty() || sop_instance.empty()) {
                status = STATUS_STORE_Error_CannotUnderstand;
                why = sop_class.empty() ? "the data set has no SOPClassUID" : "the data set has no SOPInstanceUID";
            } else if (sop_class != cmd_class) {
                status = STATUS_STORE_Error_DataSetDoesNotMatchSOPClass;
                why = "the data set's SOPClassUID " + sop_class + " is not the command's " + cmd_class;
            } else if (sop_instance != cmd_instance) {
                status = STATUS_STORE_Error_DataSetDoesNotMatchSOPClass;
                why = "the data set's SOPInstanceUID " + sop_instance + " is not the command's " + cmd_instance;
            } else if (!uid_chars(sop_instance)) {
                status = STATUS_STORE_Error_CannotUnderstand;
                why = "SOPInstanceUID '" + sop_instance + "' is not a valid UID (digits and dots)";
            }
        }
    }

    std::string path;
    std::vector<char> meta;
    if (status == STATUS_Success) {
        if (!meta_header(sop_class, sop_instance, ts.c_str(), p.calling, meta, why) ||
            !store(s, meta, raw.consumer.bytes, sop_instance, path, why))
            status = STATUS_STORE_Refused_OutOfResources;
    }

    T_DIMSE_C_StoreRSP rsp;
    memset(&rsp, 0, sizeof rsp);
    rsp.MessageIDBeingRespondedTo = req.MessageID;
    rsp.DimseStatus = status;
    rsp.DataSetType = DIMSE_DATASET_NULL;
    OFStandard::strlcpy(rsp.AffectedSOPClassUID, req.AffectedSOPClassUID, sizeof rsp.AffectedSOPClassUID);
    OFStandard::strlcpy(rsp.AffectedSOPInstanceUID, req.AffectedSOPInstanceUID, sizeof rsp.AffectedSOPInstanceUID);
    rsp.opts = O_STORE_AFFECTEDSOPCLASSUID | O_STORE_AFFECTEDSOPINSTANCEUID;
    if (req.opts & O_STORE_RQ_BLANK_PADDING) rsp.opts |= O_STORE_RSP_BLANK_PADDING;
    DcmDataset *detail = nullptr;
    DcmDataset detail_set;
    if (status != STATUS_Success && !why.empty()) {
        /* ErrorComment is at most 64 characters (LO) */
        if (detail_set.putAndInsertString(DCM_ErrorComment, why.substr(0, 64).c_str()).good()) detail = &detail_set;
    }
    OFCondition sent = DIMSE_sendStoreResponse(assoc, pres_id, &req, &rsp, detail);

    lpnx_net_event ev = make_event(status == STATUS_Success ? LPNX_NET_RECEIVED : LPNX_NET_FAILED, &p);
    put(ev.sop_class_uid, sop_class.empty() ? cmd_class : sop_class);
    put(ev.sop_instance_uid, sop_instance.empty() ? cmd_instance : sop_instance);
    put(ev.transfer_syntax, ts);
    if (status == STATUS_Success) {
        put(ev.path, path);
        ev.bytes = (long long)(meta.size() + raw.consumer.bytes.size());
    } else {
        ev.status = status;
        put(ev.reason, why);
    }
    emit(s, ev);
    if (sent.bad()) {
        emit_error(s, &p, "cannot send the C-STORE response for " + cmd_instance + ": " + text_of(sent));
        return sent;
    }
    return EC_Normal;
}

/* Answers DIMSE commands until the peer releases or aborts, a command
 * fails, the peer is silent for the timeout, or the server stops while
 * it is silent. */
OFCondition serve_commands(lpnx_net_server *s, T_ASC_Association *assoc, const Peer &p) {
    for (;;) {
        int idle = 0;
        while (!ASC_dataWaiting(assoc, 1)) {
            if (s->stop.load() || ++idle >= s->timeout)
                return makeOFCondition(OFM_dcmnet, 1, OF_error,
                                       s->stop.load() ? "the server is closing" : "the peer was silent for the timeout");
        }
        T_DIMSE_Message msg;
        T_ASC_PresentationContextID pres_id = 0;
        DcmDataset *detail = nullptr;
        OFCondition c = DIMSE_receiveCommand(assoc, DIMSE_NONBLOCKING, s->timeout, &pres_id, &msg, &detail);
        delete detail;
        if (c.bad()) return c;
        if (msg.CommandField == DIMSE_C_ECHO_RQ) {
            c = DIMSE_sendEchoResponse(assoc, pres_id, &msg.msg.CEchoRQ, STATUS_Success, nullptr);
            if (c.bad()) return c;
            emit(s, make_event(LPNX_NET_ECHO, &p));
        } else if (msg.CommandField == DIMSE_C_STORE_RQ) {
            c = handle_store(s, assoc, pres_id, msg.msg.CStoreRQ, p);
            if (c.bad()) return c;
        } else {
            char what[64];
            snprintf(what, sizeof what, "unsupported DIMSE command 0x%04x", (unsigned)msg.CommandField);
            return makeOFCondition(OFM_dcmnet, 2, OF_error, what);
        }
    }
}

/* One association, from the A-ASSOCIATE-RQ to its end. */
void serve_association(lpnx_net_server *s) {
    LogScope log;
    T_ASC_Association *assoc = nullptr;
    OFCondition c = ASC_receiveAssociation(s->net, &assoc, ASC_MAXIMUMPDUSIZE, nullptr, nullptr, OFFalse,
                                           DUL_NOBLOCK, 0);
    Peer p;
    if (assoc && assoc->params) {
        DIC_AE calling, called;
        if (ASC_getAPTitles(assoc->params, calling, sizeof calling, called, sizeof called, nullptr, 0).good()) {
            p.calling = trim(OFString(calling));
            p.called = trim(OFString(called));
        }
        p.address = assoc->params->DULparams.callingPresentationAddress;
    }
    if (c == DUL_NOASSOCIATIONREQUEST) {
        /* the connection went away before it was accepted */
    } else if (c.bad()) {
        emit_error(s, &p, "cannot receive an association" + (p.address.empty() ? "" : " from " + p.address) + ": " +
                              text_of(c) + log.detail());
    } else if (p.called != s->aet) {
        reject(s, assoc, p, ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED,
               "called AE title '" + p.called + "' is not this node's ('" + s->aet + "')");
    } else if (!allowed(s, p.calling, p.address)) {
        reject(s, assoc, p, ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED,
               "calling AE title '" + p.calling + "' not allowed from " + p.address);
    } else {
        char context[128] = "";
        if (ASC_getApplicationContextName(assoc->params, context, sizeof context).bad() ||
            strcmp(context, UID_StandardApplicationContext) != 0) {
            reject(s, assoc, p, ASC_REASON_SU_APPCONTEXTNAMENOTSUPPORTED,
                   std::string("application context '") + context + "' is not DICOM's");
        } else {
            negotiate(assoc);
            if (ASC_countAcceptedPresentationContexts(assoc->params) == 0) {
                reject(s, assoc, p, ASC_REASON_SU_NOREASON,
                       "none of the proposed presentation contexts is a storage SOP class or Verification in a "
                       "transfer syntax this node accepts");
            } else if ((c = ASC_acknowledgeAssociation(assoc)).bad()) {
                emit_error(s, &p, "cannot acknowledge the association: " + text_of(c));
            } else {
                lpnx_net_event ev = make_event(LPNX_NET_ASSOCIATION, &p);
                emit(s, ev);
                c = serve_commands(s, assoc, p);
                if (c == DUL_PEERREQUESTEDRELEASE) {
                    c = ASC_acknowledgeRelease(assoc);
                    if (c.bad()) emit_error(s, &p, "cannot acknowledge the release: " + text_of(c));
                } else if (c == DUL_PEERABORTEDASSOCIATION) {
                    emit_error(s, &p, "the peer aborted the association");
                } else {
                    emit_error(s, &p, "association aborted: " + text_of(c) + log.detail());
                    ASC_abortAssociation(assoc);
                }
            }
        }
    }
    if (assoc) {
        ASC_dropSCPAssociation(assoc);
        ASC_destroyAssociation(&assoc);
    }
}

void *server_thread(void *arg) {
    lpnx_net_server *s = static_cast<lpnx_net_server *>(arg);
    while (!s->stop.load()) {
        struct pollfd fds[2] = {{s->listen_fd, POLLIN, 0}, {s->wake[0], POLLIN, 0}};
        int n = poll(fds, 2, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            emit_error(s, nullptr, std::string("the server stopped: poll failed (") + strerror(errno) + ")");
            break;
        }
        if (fds[1].revents || s->stop.load()) break;
        if (fds[0].revents & (POLLERR | POLLNVAL)) {
            emit_error(s, nullptr, "the server stopped: its listening socket failed");
            break;
        }
        if (fds[0].revents & POLLIN) {
            try {
                serve_association(s);
            } catch (const std::bad_alloc &) {
                emit_error(s, nullptr, "not enough memory for an association");
            } catch (...) {
                emit_error(s, nullptr, "unexpected error inside DCMTK while serving an association");
            }
        }
    }
    return nullptr;
}

/* ---- listen ---- */

/* A bound, listening, non-blocking IPv4 socket; -1 with err set. */
int open_listener(const char *host, int port, char *err, size_t errlen) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    if (!host) host = "0.0.0.0";
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        set_err(err, errlen, "host '%s' is not an IPv4 address", host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        set_err(err, errlen, "cannot make a socket (%s)", strerror(errno));
        return -1;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 32) != 0) {
        set_err(err, errlen, "port %d: %s", port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Resolves an allow entry's host to IPv4 addresses. */
bool resolve(const std::string &host, std::vector<std::string> &out) {
    struct in_addr a;
    if (inet_pton(AF_INET, host.c_str(), &a) == 1) {
        out.push_back(host);
        return true;
    }
    struct addrinfo hints, *res = nullptr;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || !res) return false;
    for (struct addrinfo *r = res; r; r = r->ai_next) {
        char text[INET_ADDRSTRLEN];
        const struct sockaddr_in *sin = (const struct sockaddr_in *)r->ai_addr;
        if (inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text)) out.push_back(text);
    }
    freeaddrinfo(res);
    return !out.empty();
}

/* Frees everything listen set up; the thread is not running. */
void destroy(lpnx_net_server *s) {
    if (s->net) {
        ASC_dropNetwork(&s->net); /* closes the listening socket too */
        s->net = nullptr;
        s->listen_fd = -1;
    }
    if (s->listen_fd >= 0) close(s->listen_fd);
    s->listen_fd = -1;
    for (int &fd : s->wake) {
        if (fd >= 0) close(fd);
        fd = -1;
    }
}

int listen_server(lpnx_net_server **out, const lpnx_net_listen_options *o, char *err, size_t errlen) {
    if (!o->aet || !lpnx_net_valid_aet(o->aet)) {
        set_err(err, errlen, "aet '%s' is not a valid AE title (1..16 printable ASCII characters, no backslash)",
                o->aet ? o->aet : "");
        return -1;
    }
    if (o->port < 0 || o->port > 65535) {
        set_err(err, errlen, "port %d is not in 0..65535", o->port);
        return -1;
    }
    if (o->timeout < 1) {
        set_err(err, errlen, "timeout %d is not a positive number of seconds", o->timeout);
        return -1;
    }
    if (!o->spool || !*o->spool) {
        set_err(err, errlen, "no spool folder given");
        return -1;
    }
    std::unique_ptr<lpnx_net_server> s(new lpnx_net_server());
    s->aet = o->aet;
    s->spool = o->spool;
    while (s->spool.size() > 1 && s->spool.back() == '/') s->spool.pop_back();
    s->timeout = o->timeout;
    s->has_allow = o->allow != nullptr;
    for (size_t i = 0; s->has_allow && i < o->nallow; i++) {
        std::string entry = o->allow[i] ? o->allow[i] : "";
        AllowEntry a;
        size_t at = entry.rfind('@');
        a.aet = at == std::string::npos ? entry : entry.substr(0, at);
        if (!lpnx_net_valid_aet(a.aet.c_str())) {
            set_err(err, errlen, "allow[%zu]: '%s' is not an AE title or AET@HOST", i + 1, entry.c_str());
            return -1;
        }
        a.aet = trim(OFString(a.aet.c_str()));
        if (at != std::string::npos) {
            a.any_host = false;
            if (!resolve(entry.substr(at + 1), a.addresses)) {
                set_err(err, errlen, "allow[%zu]: host '%s' cannot be resolved to an IPv4 address", i + 1,
                        entry.substr(at + 1).c_str());
                return -1;
            }
        }
        s->allow.push_back(a);
    }
    if (!check_spool(s->spool, err, errlen) || !scan_spool(s.get(), err, errlen)) return -1;

    s->listen_fd = open_listener(o->host, o->port, err, errlen);
    if (s->listen_fd < 0) return -1;
    struct sockaddr_in bound;
    socklen_t blen = sizeof bound;
    if (getsockname(s->listen_fd, (struct sockaddr *)&bound, &blen) != 0) {
        set_err(err, errlen, "port %d: cannot read the bound address (%s)", o->port, strerror(errno));
        destroy(s.get());
        return -1;
    }
    s->port = ntohs(bound.sin_port);

    /* DCMTK's acceptor network, with lpnx's socket in place of its own */
    LogScope log;
    OFCondition c = ASC_initializeNetwork(NET_ACCEPTOR, 0, s->timeout, &s->net);
    if (c.bad() || !s->net || !s->net->network) {
        set_err(err, errlen, "cannot initialise DCMTK's network: %s%s", text_of(c).c_str(), log.detail().c_str());
        destroy(s.get());
        return -1;
    }
    PRIVATE_NETWORKKEY *key = static_cast<PRIVATE_NETWORKKEY *>(s->net->network);
    if (key->networkSpecific.TCP.listenSocket >= 0) close(key->networkSpecific.TCP.listenSocket);
    key->networkSpecific.TCP.listenSocket = s->listen_fd;
    key->networkSpecific.TCP.port = s->port;
    s->net->acceptorPort = s->port;

    if (pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        set_err(err, errlen, "cannot make a pipe (%s)", strerror(errno));
        destroy(s.get());
        return -1;
    }

    /* the thread starts with every signal blocked: they go to the caller's threads */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&s->thread, nullptr, server_thread, s.get());
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (rc != 0) {
        set_err(err, errlen, "cannot start the server thread (%s)", strerror(rc));
        destroy(s.get());
        return -1;
    }
    s->thread_started = true;
    *out = s.release();
    return 0;
}

/* ------------------------------------------------------------------ */
/* the SCU side                                                        */
/* ------------------------------------------------------------------ */

/* What the SCU knows of a file before the association. */
struct Outgoing {
    std::string sop_class, sop_instance, ts;
    E_TransferSyntax xfer = EXS_Unknown;
    bool readable = false;
};

/* An association to peer with the given presentation contexts (abstract
 * syntax, transfer syntaxes); -1 with "host:port: reason" in err. */
int associate(const lpnx_net_peer *peer, const std::vector<std::pair<std::string, std::vector<std::string>>> &contexts,
              T_ASC_Network **net, T_ASC_Association **assoc, const LogScope &log, char *err, size_t errlen) {
    char where[300];
    snprintf(where, sizeof where, "%s:%d", peer->host, peer->port);
    dcmConnectionTimeout.set(peer->timeout);
    OFCondition c = ASC_initializeNetwork(NET_REQUESTOR, 0, peer->timeout, net);
    if (c.bad()) {
        set_err(err, errlen, "%s: cannot initialise the network: %s", where, text_of(c).c_str());
        return -1;
    }
    T_ASC_Parameters *params = nullptr;
    c = ASC_createAssociationParameters(&params, ASC_DEFAULTMAXPDU * 4);
    if (c.bad()) {
        set_err(err, errlen, "%s: %s", where, text_of(c).c_str());
        return -1;
    }
    ASC_setAPTitles(params, peer->aet, peer->called, nullptr);
    char local[256] = "localhost";
    gethostname(local, sizeof local - 1);
    ASC_setPresentationAddresses(params, local, where);
    T_ASC_PresentationContextID id = 1;
    for (const auto &pc : contexts) {
        std::vector<const char *> ts;
        for (const std::string &t : pc.second) ts.push_back(t.c_str());
        c = ASC_addPresentationContext(params, id, pc.first.c_str(), ts.data(), (int)ts.size());
        if (c.bad()) {
            ASC_destroyAssociationParameters(&params);
            set_err(err, errlen, "%s: %s", where, text_of(c).c_str());
            return -1;
        }
        id += 2;
    }
    c = ASC_requestAssociation(*net, params, assoc);
    if (c.bad()) {
        std::string why;
        if (c == DUL_ASSOCIATIONREJECTED) {
            T_ASC_RejectParameters rej;
            OFString s;
            ASC_getRejectParameters(params, &rej);
            ASC_printRejectParameters(s, &rej);
            why = "association rejected: " + std::string(s.c_str());
            for (char &ch : why)
                if (ch == '\n') ch = ' ';
        } else {
            why = text_of(c) + log.detail();
        }
        if (*assoc) ASC_destroyAssociation(assoc); /* frees params too */
        else ASC_destroyAssociationParameters(&params);
        set_err(err, errlen, "%s: %s", where, why.c_str());
        return -1;
    }
    return 0;
}

/* Releases (or, when ok is false, aborts) and frees what associate made. */
void finish(T_ASC_Network **net, T_ASC_Association **assoc, bool release) {
    if (*assoc) {
        OFCondition c = release ? ASC_releaseAssociation(*assoc) : ASC_abortAssociation(*assoc);
        if (c.bad() && release) ASC_abortAssociation(*assoc);
        ASC_destroyAssociation(assoc);
    }
    if (*net) ASC_dropNetwork(net);
}

/* The reason of a failure status: DCMTK's name for it and the
 * ErrorComment the peer sent, if any. */
std::string status_reason(Uint16 status, DcmDataset *detail) {
    char code[16];
    snprintf(code, sizeof code, "0x%04X", status);
    std::string r = std::string("status ") + code + " (" + DU_cstoreStatusString(status) + ")";
    std::string comment = get_string(detail, DCM_ErrorComment);
    if (!comment.empty()) r += ": " + comment;
    return r;
}

int store_files(const lpnx_net_peer *peer, const char *const *files, size_t n, lpnx_net_store_result *results,
                char *err, size_t errlen) {
    LogScope log;
    NoSigpipe no_sigpipe;
    std::vector<Outgoing> out(n);
    /* (SOP class, transfer syntax) -> the transfer syntaxes proposed for it */
    std::map<std::pair<std::string, std::string>, std::vector<std::string>> wanted;
    for (size_t i = 0; i < n; i++) {
        lpnx_net_store_result &r = results[i];
        memset(&r, 0, sizeof r);
        DcmFileFormat ff;
        LogScope file_log;
        char why[600];
        if (!check_path(files[i], why, sizeof why)) {
            put(r.reason, std::string(files[i]) + ": " + why);
            continue;
        }
        /* values over 4 KiB stay in the file: only the attributes are needed now */
        OFCondition c = ff.loadFile(OFFilename(files[i]), EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect);
        if (c.bad()) {
            snprintf(r.reason, sizeof r.reason, "%s: not a readable DICOM file: %s%s", files[i], c.text(),
                     file_log.detail().c_str());
            continue;
        }
        Outgoing &o = out[i];
        o.sop_class = get_string(ff.getDataset(), DCM_SOPClassUID);
        o.sop_instance = get_string(ff.getDataset(), DCM_SOPInstanceUID);
        o.ts = get_string(ff.getMetaInfo(), DCM_TransferSyntaxUID);
        o.xfer = ff.getDataset()->getOriginalXfer();
        if (o.ts.empty()) o.ts = DcmXfer(o.xfer).getXferID();
        put(r.sop_instance_uid, o.sop_instance);
        if (o.sop_class.empty() || o.sop_instance.empty()) {
            snprintf(r.reason, sizeof r.reason, "%s: no %s", files[i], o.sop_class.empty() ? "SOPClassUID" : "SOPInstanceUID");
            continue;
        }
        if (DcmXfer(o.ts.c_str()).getXfer() == EXS_Unknown) {
            snprintf(r.reason, sizeof r.reason, "%s: transfer syntax %s cannot be sent with this DCMTK (%s)", files[i],
                     o.ts.c_str(), OFFIS_DCMTK_VERSION_STRING);
            continue;
        }
        o.readable = true;
        std::vector<std::string> &ts = wanted[{o.sop_class, o.ts}];
        if (ts.empty()) {
            ts.push_back(o.ts);
            if (uncompressed(o.xfer)) {
                for (const char *u : {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax})
                    if (o.ts != u) ts.push_back(u);
            }
        }
    }
    if (wanted.empty()) return 0; /* nothing to send: every result says why */
    if (wanted.size() > 128) {
        set_err(err, errlen, "%s:%d: the files need %zu presentation contexts, more than the 128 of one association; "
                "send them in smaller groups", peer->host, peer->port, wanted.size());
        return -1;
    }
    std::vector<std::pair<std::string, std::vector<std::string>>> contexts;
    for (const auto &w : wanted) contexts.push_back({w.first.first, w.second});

    T_ASC_Network *net = nullptr;
    T_ASC_Association *assoc = nullptr;
    if (associate(peer, contexts, &net, &assoc, log, err, errlen) != 0) {
        finish(&net, &assoc, false);
        return -1;
    }
    bool alive = true;
    std::string lost; /* why the association ended early */
    for (size_t i = 0; i < n; i++) {
        lpnx_net_store_result &r = results[i];
        Outgoing &o = out[i];
        if (!o.readable) continue;
        if (!alive) {
            snprintf(r.reason, sizeof r.reason, "not sent: %s", lost.c_str());
            continue;
        }
        /* an accepted context in the file's own syntax, else (uncompressed
         * files) in either little endian one */
        T_ASC_PresentationContextID pres_id = 0;
        int count = ASC_countAcceptedPresentationContexts(assoc->params);
        (void)count;
        for (int pass = 0; pass < 2 && !pres_id; pass++) {
            for (int k = 0; k < ASC_countPresentationContexts(assoc->params) && !pres_id; k++) {
                T_ASC_PresentationContext pc;
                if (ASC_getPresentationContext(assoc->params, k, &pc).bad() ||
                    pc.resultReason != ASC_P_ACCEPTANCE || o.sop_class != pc.abstractSyntax)
                    continue;
                std::string accepted = pc.acceptedTransferSyntax;
                if (pass == 0 ? accepted == o.ts
                              : uncompressed(o.xfer) && uncompressed(DcmXfer(accepted.c_str()).getXfer()))
                    pres_id = pc.presentationContextID;
            }
        }
        if (!pres_id) {
            snprintf(r.reason, sizeof r.reason, "%s: the peer accepted no presentation context for SOP class %s in %s",
                     files[i], o.sop_class.c_str(), o.ts.c_str());
            continue;
        }
        DcmFileFormat ff;
        LogScope file_log;
        char why[600];
        if (!load_file(ff, files[i], file_log, why, sizeof why)) {
            put(r.reason, std::string(files[i]) + ": " + why);
            continue;
        }
        T_DIMSE_C_StoreRQ req;
        memset(&req, 0, sizeof req);
        req.MessageID = assoc->nextMsgID++;
        OFStandard::strlcpy(req.AffectedSOPClassUID, o.sop_class.c_str(), sizeof req.AffectedSOPClassUID);
        OFStandard::strlcpy(req.AffectedSOPInstanceUID, o.sop_instance.c_str(), sizeof req.AffectedSOPInstanceUID);
        req.DataSetType = DIMSE_DATASET_PRESENT;
        req.Priority = DIMSE_PRIORITY_MEDIUM;
        T_DIMSE_C_StoreRSP rsp;
        memset(&rsp, 0, sizeof rsp);
        DcmDataset *detail = nullptr;
        OFCondition c = DIMSE_storeUser(assoc, pres_id, &req, nullptr, ff.getDataset(), nullptr, nullptr,
                                        DIMSE_NONBLOCKING, peer->timeout, &rsp, &detail, nullptr, 0);
        if (c.bad()) {
            delete detail;
            lost = std::string("the association failed while sending ") + files[i] + ": " + text_of(c) +
                   file_log.detail();
            snprintf(r.reason, sizeof r.reason, "%s", lost.c_str());
            alive = false;
            continue;
        }
        r.sent = 1;
        r.status = rsp.DimseStatus;
        r.ok = rsp.DimseStatus == STATUS_Success || (rsp.DimseStatus & 0xF000) == 0xB000;
        if (!r.ok) snprintf(r.reason, sizeof r.reason, "%s", status_reason(rsp.DimseStatus, detail).c_str());
        delete detail;
    }
    finish(&net, &assoc, alive);
    return 0;
}

int echo_peer(const lpnx_net_peer *peer, char *err, size_t errlen) {
    LogScope log;
    NoSigpipe no_sigpipe;
    T_ASC_Network *net = nullptr;
    T_ASC_Association *assoc = nullptr;
    std::vector<std::pair<std::string, std::vector<std::string>>> contexts = {
        {UID_VerificationSOPClass, {UID_LittleEndianImplicitTransferSyntax}}};
    if (associate(peer, contexts, &net, &assoc, log, err, errlen) != 0) {
        finish(&net, &assoc, false);
        return -1;
    }
    if (ASC_countAcceptedPresentationContexts(assoc->params) == 0) {
        set_err(err, errlen, "%s:%d: the peer does not accept Verification", peer->host, peer->port);
        finish(&net, &assoc, true);
        return -1;
    }
    DIC_US status = 0;
    DcmDataset *detail = nullptr;
    OFCondition c = DIMSE_echoUser(assoc, assoc->nextMsgID++, DIMSE_NONBLOCKING, peer->timeout, &status, &detail);
    delete detail;
    if (c.bad()) {
        set_err(err, errlen, "%s:%d: C-ECHO failed: %s", peer->host, peer->port, text_of(c).c_str());
        finish(&net, &assoc, false);
        return -1;
    }
    finish(&net, &assoc, true);
    if (status != STATUS_Success) {
        set_err(err, errlen, "%s:%d: C-ECHO answered status 0x%04X", peer->host, peer->port, status);
        return -1;
    }
    return 0;
}

bool check_peer(const lpnx_net_peer *p, char *err, size_t errlen) {
    if (!p->host || !*p->host) {
        set_err(err, errlen, "no host given");
        return false;
    }
    if (p->port < 1 || p->port > 65535) {
        set_err(err, errlen, "port %d is not in 1..65535", p->port);
        return false;
    }
    if (!p->aet || !lpnx_net_valid_aet(p->aet) || !p->called || !lpnx_net_valid_aet(p->called)) {
        set_err(err, errlen, "'%s' is not a valid AE title",
                (!p->aet || !lpnx_net_valid_aet(p->aet)) ? (p->aet ? p->aet : "") : (p->called ? p->called : ""));
        return false;
    }
    if (p->timeout < 1) {
        set_err(err, errlen, "timeout %d is not a positive number of seconds", p->timeout);
        return false;
    }
    return true;
}

}  // namespace

/* ------------------------------------------------------------------ */
/* the C interface                                                     */
/* ------------------------------------------------------------------ */

extern "C" {

int lpnx_net_valid_aet(const char *s) {
    if (!s) return 0;
    size_t n = strlen(s);
    if (n < 1 || n > 16) return 0;
    bool any = false;
    for (const char *c = s; *c; c++) {
        if (*c < 0x20 || *c > 0x7E || *c == '\\') return 0;
        any = any || *c != ' ';
    }
    return any;
}

int lpnx_net_listen(lpnx_net_server **out, const lpnx_net_listen_options *options, char *err, size_t errlen) {
    if (out) *out = nullptr;
    if (!out || !options) {
        set_err(err, errlen, "no options given");
        return -1;
    }
    return net_guarded(err, errlen, [&] { return listen_server(out, options, err, errlen); });
}

int lpnx_net_port(const lpnx_net_server *s) { return s ? s->port : 0; }

size_t lpnx_net_pending(lpnx_net_server *s) {
    if (!s) return 0;
    std::lock_guard<std::mutex> lock(s->mu);
    return s->events.size();
}

int lpnx_net_next_event(lpnx_net_server *s, lpnx_net_event *ev) {
    if (!s || !ev) return 0;
    std::lock_guard<std::mutex> lock(s->mu);
    if (s->events.empty()) return 0;
    *ev = s->events.front();
    s->events.pop_front();
    return 1;
}

int lpnx_net_wait(lpnx_net_server *s, double seconds) {
    if (!s) return 0;
    if (!(seconds > 0)) seconds = 0;
    if (seconds > 86400) seconds = 86400;
    try {
        std::unique_lock<std::mutex> lock(s->mu);
        auto until = std::chrono::steady_clock::now() + std::chrono::microseconds((long long)(seconds * 1e6));
        return s->cv.wait_until(lock, until, [s] { return !s->events.empty(); }) ? 1 : 0;
    } catch (...) {
        return 0;
    }
}

void lpnx_net_close(lpnx_net_server *s) {
    if (!s) return;
    {
        std::lock_guard<std::mutex> lock(s->mu);
        if (s->closed) return;
        s->closed = true;
    }
    s->stop.store(true);
    if (s->thread_started) {
        char b = 1;
        ssize_t w;
        do w = write(s->wake[1], &b, 1);
        while (w < 0 && errno == EINTR);
        pthread_join(s->thread, nullptr);
        s->thread_started = false;
    }
    try {
        destroy(s);
    } catch (...) {
    }
}

void lpnx_net_free(lpnx_net_server *s) {
    if (!s) return;
    lpnx_net_close(s);
    delete s;
}

int lpnx_net_store(const lpnx_net_peer *peer, const char *const *files, size_t n, lpnx_net_store_result *results,
                   char *err, size_t errlen) {
    if (!peer || (n && (!files || !results))) {
        set_err(err, errlen, "no peer or files given");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (!files[i]) {
            set_err(err, errlen, "file %zu has no path", i + 1);
            return -1;
        }
    if (!check_peer(peer, err, errlen)) return -1;
    return net_guarded(err, errlen, [&] { return store_files(peer, files, n, results, err, errlen); });
}

int lpnx_net_echo(const lpnx_net_peer *peer, char *err, size_t errlen) {
    if (!peer) {
        set_err(err, errlen, "no peer given");
        return -1;
    }
    if (!check_peer(peer, err, errlen)) return -1;
    return net_guarded(err, errlen, [&] { return echo_peer(peer, err, errlen); });
}

}  // extern "C"
