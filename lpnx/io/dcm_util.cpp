/* The parts of the DCMTK shims that dicom.cpp, dicom_seg.cpp and
 * dicom_sr.cpp share (dcm_util.hpp).
 *
 * DCMTK logs through oflog, by default to stderr. The "dcmtk" logger is
 * detached from the console once: its error and warning messages go to a
 * per-thread capture buffer while a LogScope of that thread is alive, and
 * the shims add them to lpnx's messages ("PixelData larger (1230) than
 * remaining bytes (530) in file"); everything below warning level, and
 * anything logged outside a scope, is dropped. */
#include "dcm_util.hpp"

#include "file.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcdict.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcvras.h>
#include <dcmtk/dcmdata/dcvrcs.h>
#include <dcmtk/dcmdata/dcvrda.h>
#include <dcmtk/dcmdata/dcvrds.h>
#include <dcmtk/dcmdata/dcvris.h>
#include <dcmtk/dcmdata/dcvrlo.h>
#include <dcmtk/dcmdata/dcvrpn.h>
#include <dcmtk/dcmdata/dcvrsh.h>
#include <dcmtk/dcmdata/dcvrst.h>
#include <dcmtk/dcmdata/dcvrtm.h>
#include <dcmtk/dcmdata/dcvrui.h>
#include <dcmtk/oflog/appender.h>
#include <dcmtk/oflog/oflog.h>
#include <dcmtk/oflog/spi/logevent.h>

#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <sys/stat.h>

namespace lpnx_dcm {

/* ------------------------------------------------------------------ */
/* errors and DCMTK's log                                              */
/* ------------------------------------------------------------------ */

void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

namespace {

thread_local Captured *log_capture = nullptr;

void append_capped(std::string &to, const char *msg) {
    if (to.size() >= 400) return;
    if (!to.empty()) to.append("; ");
    to.append(msg);
}

class CaptureAppender : public dcmtk::log4cplus::Appender {
public:
    ~CaptureAppender() override { destructorImpl(); }
    void close() override { closed = true; }

protected:
    void append(const dcmtk::log4cplus::spi::InternalLoggingEvent &event) override {
        if (!log_capture) return;
        try {
            const char *msg = event.getMessage().c_str();
            if (event.getLogLevel() >= OFLogger::ERROR_LOG_LEVEL)
                append_capped(log_capture->errors, msg);
            else if (event.getLogLevel() >= OFLogger::WARN_LOG_LEVEL)
                append_capped(log_capture->warnings, msg);
        } catch (...) {
        }
    }
};

std::once_flag log_once;
bool log_ok = false;

void attach_log() {
    try {
        OFLogger logger = OFLog::getLogger("dcmtk");
        logger.setAdditivity(false); /* nothing reaches the console appender */
        logger.setLogLevel(OFLogger::WARN_LOG_LEVEL);
        logger.addAppender(dcmtk::log4cplus::SharedAppenderPtr(new CaptureAppender()));
        log_ok = true;
    } catch (...) {
        log_ok = false;
    }
}

void run_setup(Init *init) {
    try {
        std::call_once(log_once, attach_log);
        if (!log_ok) return;
        init->setup();
        init->ok = true;
    } catch (...) {
        init->ok = false;
    }
}

}  // namespace

LogScope::LogScope(bool warnings_too_) : previous(log_capture), warnings_too(warnings_too_) {
    log_capture = &captured;
}

LogScope::~LogScope() { log_capture = previous; }

std::string LogScope::detail() const {
    const std::string &m = captured.errors.empty() && warnings_too ? captured.warnings : captured.errors;
    return m.empty() ? std::string() : " (" + m + ")";
}

/* ------------------------------------------------------------------ */
/* set-up                                                              */
/* ------------------------------------------------------------------ */

bool ensure_init(Init &init, char *err, size_t errlen) {
    try {
        std::call_once(init.once, run_setup, &init);
    } catch (...) {
        set_err(err, errlen, "could not initialise DCMTK");
        return false;
    }
    if (!init.ok) {
        set_err(err, errlen, "%s", init.failure);
        return false;
    }
    if (!dcmDataDict.isDictionaryLoaded()) {
        set_err(err, errlen,
                "DCMTK's data dictionary is not loaded; set DCMDICTPATH to the path of dicom.dic "
                "(Debian: /usr/share/libdcmtk17/dicom.dic)");
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* values                                                              */
/* ------------------------------------------------------------------ */

namespace {

/* Characters (UTF-8 code points) in s[begin, end). */
size_t characters(const std::string &s, size_t begin, size_t end) {
    size_t n = 0;
    for (size_t i = begin; i < end; i++) n += ((unsigned char)s[i] & 0xC0u) != 0x80u;
    return n;
}

/* At most max characters in each '='-separated group (PN) or in all:
 * DCMTK's checks look at the characters, not at the length. */
bool short_enough(const std::string &v, size_t max, bool groups) {
    size_t begin = 0;
    for (;;) {
        size_t end = groups ? v.find('=', begin) : std::string::npos;
        if (end == std::string::npos) end = v.size();
        if (characters(v, begin, end) > max) return false;
        if (end == v.size()) return true;
        begin = end + 1;
    }
}

}  // namespace

bool valid(Vr vr, const std::string &v, const char *vm, const char *charset) {
    OFString s(v.c_str());
    switch (vr) {
    case VR_AS: return DcmAgeString::checkStringValue(s, vm).good();
    case VR_CS: return DcmCodeString::checkStringValue(s, vm).good();
    case VR_DA: return DcmDate::checkStringValue(s, vm).good();
    case VR_DS: return DcmDecimalString::checkStringValue(s, vm).good();
    case VR_IS: return DcmIntegerString::checkStringValue(s, vm).good();
    case VR_LO: return short_enough(v, 64, false) && DcmLongString::checkStringValue(s, vm, charset).good();
    case VR_PN: return short_enough(v, 64, true) && DcmPersonName::checkStringValue(s, vm, charset).good();
    case VR_SH: return short_enough(v, 16, false) && DcmShortString::checkStringValue(s, vm, charset).good();
    case VR_ST: return characters(v, 0, v.size()) <= 1024 && DcmShortText::checkStringValue(s, charset).good();
    case VR_TM: return DcmTime::checkStringValue(s, vm).good();
    case VR_UI: return v.size() <= 64 && DcmUniqueIdentifier::checkStringValue(s, vm).good();
    }
    return false;
}

const char *vr_name(Vr vr) {
    switch (vr) {
    case VR_AS: return "age string (AS: nnnD, nnnW, nnnM or nnnY)";
    case VR_CS: return "code string (CS: up to 16 of A-Z 0-9 space _)";
    case VR_DA: return "date (DA: YYYYMMDD)";
    case VR_DS: return "decimal string (DS)";
    case VR_IS: return "integer string (IS)";
    case VR_LO: return "long string (LO: up to 64 characters, no backslash)";
    case VR_PN: return "person name (PN: up to 64 characters per group, no backslash)";
    case VR_SH: return "short string (SH: up to 16 characters, no backslash)";
    case VR_ST: return "short text (ST: up to 1024 characters)";
    case VR_TM: return "time (TM: HHMMSS.FFFFFF)";
    case VR_UI: return "UID (up to 64 digits and dots, no leading zeros)";
    }
    return "value";
}

bool non_ascii(const char *s) {
    for (; s && *s; s++)
        if ((unsigned char)*s >= 0x80) return true;
    return false;
}

std::string format_ds(double v) {
    char buf[64];
    for (int precision = 12; precision > 1; precision--) {
        snprintf(buf, sizeof buf, "%.*g", precision, v);
        if (strlen(buf) <= 16) return buf;
    }
    snprintf(buf, sizeof buf, "%.1g", v);
    return buf;
}

std::string trim(const OFString &s) {
    size_t b = 0, e = s.length();
    while (b < e && (s[b] == ' ' || s[b] == '\0')) b++;
    while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\0')) e--;
    return std::string(s.c_str() + b, e - b);
}

std::string get_string(DcmItem *item, const DcmTagKey &tag) {
    OFString v;
    if (!item || item->findAndGetOFString(tag, v, 0).bad()) return std::string();
    return trim(v);
}

bool get_number(DcmItem *item, const DcmTagKey &tag, unsigned long pos, double *out) {
    if (!item) return false;
    Float64 v = 0;
    if (item->findAndGetFloat64(tag, v, pos).bad()) { /* DS only; IS by its string */
        OFString s;
        if (item->findAndGetOFString(tag, s, pos).bad()) return false;
        std::string t = trim(s);
        if (t.empty()) return false;
        char *end = nullptr;
        errno = 0;
        v = strtod(t.c_str(), &end);
        if (end == t.c_str() || *end != '\0' || errno == ERANGE) return false;
    }
    if (!std::isfinite(v)) return false;
    *out = v;
    return true;
}

void add_warning(std::string &warnings, const std::string &w) {
    if (!warnings.empty()) warnings += "\n";
    warnings += w;
}

namespace {

/* A source attribute that is copied when it can be: name for messages,
 * where it lives in lpnx_seg_source, its VR and multiplicity. */
struct SourceField {
    const char *name;
    const char *lpnx_seg_source::*member;
    Vr vr;
    const char *vm;
};

const SourceField copied[] = {
    {"frame_of_reference_uid", &lpnx_seg_source::frame_of_reference_uid, VR_UI, "1"},
    {"patient_name", &lpnx_seg_source::patient_name, VR_PN, "1"},
    {"patient_id", &lpnx_seg_source::patient_id, VR_LO, "1"},
    {"patient_birth_date", &lpnx_seg_source::patient_birth_date, VR_DA, "1"},
    {"patient_sex", &lpnx_seg_source::patient_sex, VR_CS, "1"},
    {"patient_age", &lpnx_seg_source::patient_age, VR_AS, "1"},
    {"study_date", &lpnx_seg_source::study_date, VR_DA, "1"},
    {"study_time", &lpnx_seg_source::study_time, VR_TM, "1"},
    {"study_id", &lpnx_seg_source::study_id, VR_SH, "1"},
    {"accession_number", &lpnx_seg_source::accession_number, VR_SH, "1"},
    {"referring_physician_name", &lpnx_seg_source::referring_physician_name, VR_PN, "1"},
    {"study_description", &lpnx_seg_source::study_description, VR_LO, "1"},
    {"lossy_image_compression", &lpnx_seg_source::lossy_image_compression, VR_CS, "1"},
    {"lossy_image_compression_ratio", &lpnx_seg_source::lossy_image_compression_ratio, VR_DS, "1-n"},
    {"lossy_image_compression_method", &lpnx_seg_source::lossy_image_compression_method, VR_CS, "1-n"},
    {"patient_orientation", &lpnx_seg_source::patient_orientation, VR_CS, "2"},
};

/* The longest value of a VR that lpnx shortens rather than leaves out:
 * characters in all (LO, SH) or in each '='-separated group (PN); 0 for
 * the others. */
size_t vr_limit(Vr vr) {
    switch (vr) {
    case VR_LO: return 64;
    case VR_PN: return 64;
    case VR_SH: return 16;
    default: return 0;
    }
}

/* s cut to at most max characters (UTF-8 code points, so never inside
 * one), trailing spaces dropped. */
std::string cut_characters(const std::string &s, size_t max) {
    size_t n = 0, i = 0;
    for (; i < s.size(); i++) {
        if (((unsigned char)s[i] & 0xC0u) != 0x80u) {
            if (n == max) break;
            n++;
        }
    }
    std::string out = s.substr(0, i);
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
}

/* A value too long for its VR cut at the VR's limit (each component group
 * of a person name on its own); other values as they are. */
std::string fit_to_vr(Vr vr, const std::string &v) {
    size_t max = vr_limit(vr);
    if (max == 0) return v;
    if (vr != VR_PN) return cut_characters(v, max);
    std::string out;
    size_t begin = 0;
    for (;;) {
        size_t end = v.find('=', begin);
        if (end == std::string::npos) end = v.size();
        out += cut_characters(v.substr(begin, end - begin), max);
        if (end == v.size()) return out;
        out += '=';
        begin = end + 1;
    }
}

}  // namespace

static_assert(sizeof copied / sizeof *copied <= 16, "SourceValues::shortened holds one value per copied field");

bool check_fields(const SourceValues &fixed, const char *specific_character_set, const Field *source,
                  size_t nsource, const Field *options, size_t noptions, std::string &charset, char *err,
                  size_t errlen) {
    charset = specific_character_set ? specific_character_set : "";
    bool utf8 = fixed.non_ascii();
    for (size_t i = 0; i < noptions; i++) utf8 = utf8 || non_ascii(options[i].value);
    if (utf8 && charset.empty()) charset = "ISO_IR 192";
    if (!charset.empty() && !valid(VR_CS, charset, "1-n", "")) {
        set_err(err, errlen, "source_meta.specific_character_set '%.80s' is not a valid %s", charset.c_str(),
                vr_name(VR_CS));
        return false;
    }
    struct Group {
        const char *prefix;
        const Field *fields;
        size_t n;
    };
    const Group groups[] = {{"source_meta", source, nsource}, {"opts", options, noptions}};
    for (const Group &g : groups) {
        for (size_t i = 0; i < g.n; i++) {
            const Field &f = g.fields[i];
            if (!f.value || !*f.value) {
                if (f.required) {
                    set_err(err, errlen, "%s.%s is required", g.prefix, f.name);
                    return false;
                }
                continue;
            }
            if (!valid(f.vr, f.value, "1", charset.c_str())) {
                set_err(err, errlen, "%s.%s '%.80s' is not a valid %s", g.prefix, f.name, f.value, vr_name(f.vr));
                return false;
            }
        }
    }
    return true;
}

bool SourceValues::non_ascii() const {
    for (const SourceField &f : copied)
        if (lpnx_dcm::non_ascii(src.*f.member)) return true;
    return false;
}

void SourceValues::fit(const std::string &charset, std::string &warnings) {
    for (size_t i = 0; i < sizeof copied / sizeof *copied; i++) {
        const SourceField &f = copied[i];
        const char *v = src.*f.member;
        if (!v || !*v) continue;
        const char *set = f.vr == VR_DS || f.vr == VR_CS || f.vr == VR_UI ? "" : charset.c_str();
        if (valid(f.vr, v, f.vm, set)) continue;
        char w[256];
        shortened[i] = fit_to_vr(f.vr, v);
        if (shortened[i] != v && !shortened[i].empty() && valid(f.vr, shortened[i], f.vm, set)) {
            src.*f.member = shortened[i].c_str();
            snprintf(w, sizeof w, "source %s '%.40s...' is longer than a %s: cut to '%.80s'", f.name, v,
                     vr_name(f.vr), shortened[i].c_str());
        } else {
            src.*f.member = nullptr;
            snprintf(w, sizeof w, "source %s '%.80s' is not a valid %s: left out", f.name, v, vr_name(f.vr));
        }
        add_warning(warnings, w);
    }
}

bool check_spacing(const char *where, const double spacing[2], char *err, size_t errlen) {
    for (int k = 0; k < 2; k++) {
        if (!std::isfinite(spacing[k]) || spacing[k] <= 0) {
            set_err(err, errlen, "%s.pixel_spacing[%d] must be a positive number, got %g", where, k + 1, spacing[k]);
            return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* files                                                               */
/* ------------------------------------------------------------------ */

bool check_path(const char *path, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st) != 0) {
        set_err(err, errlen, "cannot open (%s)", strerror(errno));
        return false;
    }
    if (S_ISDIR(st.st_mode)) {
        set_err(err, errlen, "cannot open (is a directory)");
        return false;
    }
    return true;
}

bool load_file(DcmFileFormat &file, const char *path, const LogScope &log, char *err, size_t errlen) {
    OFCondition cond = file.loadFile(OFFilename(path), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
    if (cond.bad()) {
        set_err(err, errlen, "not a readable DICOM file: %s%s", cond.text(), log.detail().c_str());
        return false;
    }
    cond = file.loadAllDataIntoMemory();
    if (cond.bad()) {
        set_err(err, errlen, "cannot read the data set: %s%s", cond.text(), log.detail().c_str());
        return false;
    }
    return true;
}

namespace {

/* Aborts an atomic write when it goes out of scope (a no-op once committed). */
struct AtomicGuard {
    lpnx_atomic_file *f;
    ~AtomicGuard() { lpnx_atomic_abort(f); }
};

}  // namespace

bool save_file(DcmFileFormat &file, const char *path, E_TransferSyntax xfer, const LogScope &log, char *err,
               size_t errlen) {
    lpnx_atomic_file out;
    if (lpnx_atomic_begin(&out, path, nullptr, 0) != 0) {
        set_err(err, errlen, "cannot create a temp file beside it (%s)", strerror(out.error));
        return false;
    }
    AtomicGuard guard{&out}; /* the temp file is removed on every way out but the commit */
    OFCondition c = file.saveFile(OFFilename(out.temp_path), xfer, EET_ExplicitLength, EGL_recalcGL, EPD_noChange);
    if (c.bad()) {
        set_err(err, errlen, "cannot write: %s%s", c.text(), log.detail().c_str());
        return false;
    }
    /* 1 (in place, but the folder's fsync failed) is success here: the
     * folder's sync is best effort */
    if (lpnx_atomic_commit(&out, nullptr, 0) < 0) {
        set_err(err, errlen, "cannot write (%s)", out.error ? strerror(out.error) : "short write");
        return false;
    }
    return true;
}

std::string rle_capacity_problem(DcmDataset *ds, E_TransferSyntax xfer, double decoded) {
    if (xfer != EXS_RLELossless) return "";
    DcmElement *el = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, el).bad() || !el) return "";
    DcmPixelSequence *seq = nullptr;
    if (OFstatic_cast(DcmPixelData *, el)->getEncapsulatedRepresentation(xfer, nullptr, seq).bad() || !seq)
        return "";
    double bytes = 0; /* the fragments after the offset table, walked once */
    bool first = true;
    for (DcmObject *o = seq->nextInContainer(nullptr); o; o = seq->nextInContainer(o)) {
        if (!first) bytes += (double)o->getLength();
        first = false;
    }
    if (64.0 * bytes >= decoded) return "";
    char text[200];
    std::snprintf(text, sizeof text, "%.0f bytes of RLE data cannot hold the %.0f bytes the image needs "
                  "(RLE packs at most 64 to 1)", bytes, decoded);
    return text;
}

}  // namespace lpnx_dcm
