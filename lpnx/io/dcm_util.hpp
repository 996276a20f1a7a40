/* What the DCMTK shims (dicom.cpp, dicom_seg.cpp, dicom_sr.cpp) share:
 * error messages, the capture of DCMTK's log, the one-time set-up, the
 * checks of string values against their VR, the source values a derived
 * object copies, attribute getters, loading a whole file and saving one
 * atomically. C++ inside lpnx's C++ files only; nothing here
 * throws out of a C entry point, since every entry point goes through
 * guarded(). */
#ifndef LPNX_IO_DCM_UTIL_HPP
#define LPNX_IO_DCM_UTIL_HPP

#include "dicom_seg.h" /* lpnx_seg_source: what a derived object takes over from its source */

#include <dcmtk/config/osconfig.h>

#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcxfer.h>

#include <cstddef>
#include <mutex>
#include <new>
#include <string>

namespace lpnx_dcm {

/* ------------------------------------------------------------------ */
/* errors and DCMTK's log                                              */
/* ------------------------------------------------------------------ */

/* printf into err (nothing when err is NULL or errlen 0). */
void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* What DCMTK logs while a call of this thread runs: error messages, and
 * warnings separately (the JPEG and RLE decoders report damaged data only
 * as warnings). Each list is capped near 400 characters. */
struct Captured {
    std::string errors, warnings;
};

/* Captures DCMTK's messages for the lifetime of the object (the innermost
 * scope of the thread gets them). */
class LogScope {
public:
    /* warnings_too: detail() falls back on the warnings when no error was
     * logged */
    explicit LogScope(bool warnings_too = false);
    ~LogScope();
    LogScope(const LogScope &) = delete;
    LogScope &operator=(const LogScope &) = delete;
    /* " (messages)" or "": the errors (else the warnings, when asked for) */
    std::string detail() const;
    Captured captured;

private:
    Captured *previous;
    bool warnings_too;
};

/* The first failing step of a build, with its message: each step's
 * condition goes through ok(), which records the first bad one as "cannot
 * WHAT: DCMTK's text (DCMTK's log)" in err and refuses every later step. */
struct Build {
    Build(char *err_, size_t errlen_, LogScope &log_) : err(err_), errlen(errlen_), log(log_) {}
    char *err;
    size_t errlen;
    LogScope &log;
    bool failed = false;

    /* Records the failure of step what when c is bad; true while all is well. */
    bool ok(const OFCondition &c, const char *what) {
        if (failed) return false;
        if (c.good()) return true;
        set_err(err, errlen, "cannot %s: %s%s", what, c.text(), log.detail().c_str());
        failed = true;
        return false;
    }
};

/* ------------------------------------------------------------------ */
/* set-up                                                              */
/* ------------------------------------------------------------------ */

/* A shim's one-time set-up: the "dcmtk" logger is detached from the
 * console into the capture (once for every shim), then setup() registers
 * the shim's codecs (it may throw; that is a failed set-up, reported as
 * failure). */
struct Init {
    Init(void (*setup_)(), const char *failure_) : setup(setup_), failure(failure_) {}
    void (*setup)();
    const char *failure; /* the message when the set-up failed */
    std::once_flag once;
    bool ok = false;
};

/* Runs init once; checks that DCMTK's data dictionary is loaded. False with
 * a reason in err otherwise. */
bool ensure_init(Init &init, char *err, size_t errlen);

/* The frame of every C entry point that takes a path: "no path" for NULL,
 * the set-up, then body() (which returns 0 or -1 with err set); whatever
 * is thrown becomes -1 with "not enough memory" or "unexpected error
 * inside DCMTK". */
template <class Body> int guarded(Init &init, const char *path, char *err, size_t errlen, Body body) {
    try {
        if (!path) {
            set_err(err, errlen, "no path");
            return -1;
        }
        if (!ensure_init(init, err, errlen)) return -1;
        return body();
    } catch (const std::bad_alloc &) {
        set_err(err, errlen, "not enough memory");
    } catch (...) {
        set_err(err, errlen, "unexpected error inside DCMTK");
    }
    return -1;
}

/* ------------------------------------------------------------------ */
/* values                                                              */
/* ------------------------------------------------------------------ */

enum Vr { VR_AS, VR_CS, VR_DA, VR_DS, VR_IS, VR_LO, VR_PN, VR_SH, VR_ST, VR_TM, VR_UI };

/* v against its VR; vm "1" or "1-n" (backslash-separated values) or "2". */
bool valid(Vr vr, const std::string &v, const char *vm, const char *charset);
/* What the VR allows, for messages: "date (DA: YYYYMMDD)". */
const char *vr_name(Vr vr);
/* Any byte >= 0x80 in s (NULL is fine). */
bool non_ascii(const char *s);
/* A DS value of at most 16 characters for v > 0. */
std::string format_ds(double v);

/* s without leading and trailing spaces and NULs. */
std::string trim(const OFString &s);
/* First value of a string attribute, trimmed; empty when absent (or item
 * is NULL). */
std::string get_string(DcmItem *item, const DcmTagKey &tag);
/* A finite number from a DS, IS or US attribute (value pos); false when
 * absent, unreadable or item is NULL. */
bool get_number(DcmItem *item, const DcmTagKey &tag, unsigned long pos, double *out);

/* Appends one warning to a list of lines ('\n' between them). */
void add_warning(std::string &warnings, const std::string &w);

/* The source values a derived object (a segmentation, a report) copies:
 * patient, study, frame of reference, orientation and lossy history, each
 * NULL when absent. fit() makes every one fit its VR: a value longer than
 * its VR permits (LO, SH, each component group of a PN) is cut at the
 * limit on a character boundary, any other invalid value is left out, and
 * each change is a line of warnings ("source patient_name '...' is longer
 * than a person name (...): cut to '...'"), so that an archive's free-text
 * values never cost an image its results. src's strings point into the
 * given source or into this object, which therefore cannot be copied. */
class SourceValues {
public:
    explicit SourceValues(const lpnx_seg_source &given) : src(given) {}
    SourceValues(const SourceValues &) = delete;
    SourceValues &operator=(const SourceValues &) = delete;
    /* Any byte >= 0x80 in a copied value. */
    bool non_ascii() const;
    /* Checks every copied value against its VR under charset (the
     * SpecificCharacterSet the object will declare; "" for the default). */
    void fit(const std::string &charset, std::string &warnings);
    lpnx_seg_source src;

private:
    std::string shortened[16]; /* owns the cut values, one per copied field */
};

/* A string attribute to check and set: name for messages, the value
 * (NULL = not given), its VR, and whether it is required. */
struct Field {
    const char *name;
    const char *value;
    Vr vr;
    bool required;
};

/* The character set a derived object declares, and its string attributes
 * checked under it: charset becomes the source's SpecificCharacterSet, or
 * "ISO_IR 192" when none is given and a copied value or an option is not
 * ASCII. Every field of source (named source_meta.NAME in messages) and
 * options (opts.NAME) must be present when required and valid for its VR.
 * Returns false with the reason in err. */
bool check_fields(const SourceValues &fixed, const char *specific_character_set, const Field *source,
                  size_t nsource, const Field *options, size_t noptions, std::string &charset, char *err,
                  size_t errlen);

/* Checks that both spacings (row, column) are positive finite numbers;
 * the message names them as where.pixel_spacing[1] and [2]. */
bool check_spacing(const char *where, const double spacing[2], char *err, size_t errlen);

/* For RLE Lossless pixel data: a message when its fragments are too
 * short to decode to `decoded` bytes (PackBits makes at most 128 bytes of
 * 2, and each frame's 64-byte header counts), so that a small file cannot
 * make the decoder allocate a huge image; "" when they can, and for any
 * other transfer syntax. */
std::string rle_capacity_problem(DcmDataset *ds, E_TransferSyntax xfer, double decoded);

/* ------------------------------------------------------------------ */
/* files                                                               */
/* ------------------------------------------------------------------ */

/* Checks that path exists and is not a folder. */
bool check_path(const char *path, char *err, size_t errlen);

/* Loads path into file, the pixel data too, so that a truncated or
 * unreadable value fails here rather than half way through decoding. */
bool load_file(DcmFileFormat &file, const char *path, const LogScope &log, char *err, size_t errlen);

/* Saves file with transfer syntax xfer atomically (file.h): a temp file
 * beside path, renamed over it; on failure no temp file is left and a file
 * already at path is untouched. */
bool save_file(DcmFileFormat &file, const char *path, E_TransferSyntax xfer, const LogScope &log, char *err,
               size_t errlen);

}  // namespace lpnx_dcm

#endif /* LPNX_IO_DCM_UTIL_HPP */
