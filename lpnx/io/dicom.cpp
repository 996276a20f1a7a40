/* DICOM reading and writing through DCMTK, behind the plain C interface of
 * dicom.h. Every entry point catches every exception (catch (...),
 * through lpnx_dcm::guarded) and turns it into an error code plus a
 * message, so nothing C++ ever unwinds into C or Lua.
 *
 * Reading: DcmFileFormat::loadFile, the image attributes are checked (sizes,
 * bits, photometric interpretation, frame), encapsulated pixel data is
 * decoded in memory with DcmDataset::chooseRepresentation to explicit VR
 * little endian (the JPEG, JPEG-LS and RLE decoders are registered once),
 * and the raw 8- or 16-bit words are turned into floats here, so lossless
 * syntaxes give the stored values exactly. JPEG 2000 and HTJ2K, which
 * DCMTK cannot decode, are decoded here frame by frame from the fragments
 * DCMTK parsed, with OpenJPEG (j2k.h); so is 8-bit JPEG baseline and extended,
 * with libjpeg-turbo (jpeg_turbo.h), for speed, when it gives the same
 * pixels as DCMTK.
 *
 * A file whose meta header mislabels its data set's VR encoding (explicit
 * declared, implicit written, or the other way round), which DCMTK cannot
 * parse, is read again in the encoding it is written in, as pydicom does.
 *
 * DCMTK's error messages, captured while a call runs (dcm_util.hpp), are
 * added to lpnx's error messages ("PixelData larger (1230) than remaining
 * bytes (530) in file"). */
#include "dicom.h"
#include "dcm_util.hpp"
#include "j2k.h"
#include "jpeg_turbo.h"

#include <dcmtk/config/osconfig.h>

#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrmf.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpeg/djencode.h>
#include <dcmtk/dcmjpeg/djrploss.h>
#include <dcmtk/dcmjpls/djdecode.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using namespace lpnx_dcm; /* the shared parts of the DCMTK shims */

/* ------------------------------------------------------------------ */
/* set-up                                                              */
/* ------------------------------------------------------------------ */

/* Deregisters the codecs at exit, so the process ends with their
 * registrations freed. */
void cleanup_dcmtk() {
    try {
        DJEncoderRegistration::cleanup();
        DJDecoderRegistration::cleanup();
        DJLSDecoderRegistration::cleanup();
        DcmRLEDecoderRegistration::cleanup();
    } catch (...) {
    }
}

/* Registers the decoders (JPEG, JPEG-LS, RLE) and the JPEG encoder. */
void register_codecs() {
    DJDecoderRegistration::registerCodecs(EDC_photometricInterpretation, EUC_never);
    DJLSDecoderRegistration::registerCodecs(EJLSUC_never);
    DcmRLEDecoderRegistration::registerCodecs();
    /* Lossy JPEG must keep the SOP instance UID the caller chose and
     * the pixel values as they are (pUsePixelValues = false: no
     * shifting of the used range to 0). */
    DJEncoderRegistration::registerCodecs(ECC_lossyYCbCr, EUC_never, OFFalse, 0, 0, 0, OFTrue, ESS_422, OFTrue,
                                          OFFalse, 0, 0, 0.0, 0.0, 0, 0, 0, 0, OFFalse /* pUsePixelValues */,
                                          OFFalse, OFFalse, OFFalse, OFTrue);
    std::atexit(cleanup_dcmtk);
}

lpnx_dcm::Init dcmtk_init{register_codecs, "could not initialise DCMTK (codec registration failed)"};

/* ------------------------------------------------------------------ */
/* reading                                                             */
/* ------------------------------------------------------------------ */

const char *const string_keys[LPNX_DICOM_NSTRINGS] = {
    "view_position",      "patient_sex",         "patient_age",        "patient_id",
    "patient_name",       "modality",            "body_part_examined", "sop_class_uid",
    "sop_instance_uid",   "study_instance_uid",  "series_instance_uid", "frame_of_reference_uid",
    "study_date",         "series_description",  "conversion_type",    "specific_character_set",
    "patient_birth_date", "study_time",          "study_id",           "accession_number",
    "referring_physician_name", "study_description", "patient_orientation", "lossy_image_compression",
    "lossy_image_compression_ratio", "lossy_image_compression_method", "series_number"};

const DcmTagKey string_tags[LPNX_DICOM_NSTRINGS] = {
    DCM_ViewPosition,     DCM_PatientSex,        DCM_PatientAge,       DCM_PatientID,
    DCM_PatientName,      DCM_Modality,          DCM_BodyPartExamined, DCM_SOPClassUID,
    DCM_SOPInstanceUID,   DCM_StudyInstanceUID,  DCM_SeriesInstanceUID, DCM_FrameOfReferenceUID,
    DCM_StudyDate,        DCM_SeriesDescription, DCM_ConversionType,   DCM_SpecificCharacterSet,
    DCM_PatientBirthDate, DCM_StudyTime,         DCM_StudyID,          DCM_AccessionNumber,
    DCM_ReferringPhysicianName, DCM_StudyDescription, DCM_PatientOrientation, DCM_LossyImageCompression,
    DCM_LossyImageCompressionRatio, DCM_LossyImageCompressionMethod, DCM_SeriesNumber};

/* Attributes reported with every value (backslash-separated), not the first. */
bool all_values(const DcmTagKey &tag) {
    return tag == DCM_PatientOrientation || tag == DCM_LossyImageCompressionRatio ||
           tag == DCM_LossyImageCompressionMethod;
}

enum Color { GRAY, RGB, YBR_FULL, YBR_FULL_422, YBR_PARTIAL_422 };

/* What an lpnx_dicom_lut points into. */
struct LutStore {
    std::vector<unsigned short> data;
    std::string explanation, type;
};

}  // namespace

struct lpnx_dicom {
    lpnx_dicom_info info;
    DcmFileFormat file;
    std::string photometric, ts_uid, ts_name;
    std::string strings[LPNX_DICOM_NSTRINGS];
    /* After decoding (the JPEG decoder turns YBR into RGB): */
    Color color = GRAY;
    bool monochrome1 = false;
    int planar = 0;                 /* 1 = color-by-plane */
    const Uint8 *bytes = nullptr;   /* (frames, ...) when bits_allocated == 8 */
    const Uint16 *words = nullptr;  /* (frames, ...) when bits_allocated == 16, host order */
    /* Frames lpnx decodes itself (JPEG 2000, 8-bit JPEG through
     * libjpeg-turbo) hold only the chosen frame, here: */
    bool one_frame = false;
    std::vector<Uint8> own_bytes;
    std::vector<Uint16> own_words;
    double slope = 1.0, intercept = 0.0;
    /* What info's presentation attributes point into. */
    std::vector<double> window_centers, window_widths;
    std::vector<std::string> window_explanation_strings;
    std::vector<const char *> window_explanations;
    std::string voi_lut_function, presentation_lut_shape;
    LutStore modality_lut;
    std::vector<LutStore> voi_lut_stores;
    std::vector<lpnx_dicom_lut> voi_luts;
};

namespace {

/* Every value of a string attribute, backslash-separated, each trimmed. */
std::string get_all_strings(DcmItem *item, const DcmTagKey &tag) {
    OFString v;
    if (item->findAndGetOFStringArray(tag, v).bad()) return std::string();
    std::string out;
    size_t begin = 0;
    for (;;) {
        size_t end = v.find('\\', begin);
        if (end == OFString_npos) end = v.length();
        if (!out.empty() || begin > 0) out.push_back('\\');
        out += trim(v.substr(begin, end - begin));
        if (end >= v.length()) break;
        begin = end + 1;
    }
    return out.find_first_not_of('\\') == std::string::npos ? std::string() : out;
}

/* A US attribute; absent -> dflt with *present = false. */
bool get_us(DcmItem *item, const DcmTagKey &tag, Uint16 *out) {
    return item->findAndGetUint16(tag, *out).good();
}

/* Files without the "DICM" prefix are accepted as a bare data set only when
 * they start with a group 0002 or 0008 tag, so arbitrary bytes are not
 * parsed into a meaningless data set. Returns false with a reason. */
bool sniff(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, errlen, "cannot open (%s)", strerror(errno));
        return false;
    }
    unsigned char head[132];
    size_t n = fread(head, 1, sizeof head, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        set_err(err, errlen, "cannot read (%s)", strerror(EIO));
        return false;
    }
    if (n == 0) {
        set_err(err, errlen, "not a DICOM file (empty)");
        return false;
    }
    if (n >= 132 && memcmp(head + 128, "DICM", 4) == 0) return true;
    if (n >= 8) {
        unsigned le = head[0] | (head[1] << 8), be = (head[0] << 8) | head[1];
        if (le == 0x0002 || le == 0x0008 || be == 0x0002 || be == 0x0008) return true;
    }
    set_err(err, errlen, "not a DICOM file (no DICM prefix and no data set at the start)");
    return false;
}

/* The IJG JPEG library reports damaged entropy-coded data only as a
 * warning and goes on (filling what it lost), so such warnings logged while
 * decoding are taken as errors: "Corrupt JPEG data: premature end of data
 * segment", "... bad Huffman code", "Premature end of JPEG file". The
 * common and harmless "N extraneous bytes before marker" is let through.
 * Returns the first such warning, or "". */
/* Walks a JPEG stream's markers from SOI to its frame header (SOF) with
 * bounds checks. DCMTK 3.6.7 scans these markers itself to find the bit
 * depth and can loop forever on some malformed streams, so a stream that is
 * not well formed up to its frame header is refused before DCMTK sees it.
 * Returns an empty string when well formed, else what is wrong. */
std::string jpeg_header_problem(const Uint8 *p, size_t n) {
    char buf[160];
    if (n < 4 || p[0] != 0xFF || p[1] != 0xD8) return "the JPEG stream does not start with an SOI marker";
    size_t i = 2;
    for (;;) {
        if (i >= n || p[i] != 0xFF) {
            std::snprintf(buf, sizeof buf, "no JPEG marker at byte %zu of the stream, before its frame header", i);
            return buf;
        }
        while (i < n && p[i] == 0xFF) i++; /* fill bytes */
        if (i >= n) return "the JPEG stream ends before its frame header";
        unsigned m = p[i++];
        if (m == 0x00 || m == 0x01 || m == 0xD8 || m == 0xD9 || (m >= 0xD0 && m <= 0xD7)) {
            std::snprintf(buf, sizeof buf, "unexpected JPEG marker 0xFF%02X before the frame header", m);
            return buf;
        }
        if (i + 2 > n) return "the JPEG stream ends inside a marker segment";
        size_t len = ((size_t)p[i] << 8) | p[i + 1];
        if (len < 2 || i + len > n) {
            std::snprintf(buf, sizeof buf, "JPEG marker 0xFF%02X's segment (%zu bytes) runs past the end of its data", m,
                          len);
            return buf;
        }
        bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
        if (sof) return len >= 8 ? std::string() : std::string("the JPEG frame header is too short");
        i += len;
    }
}

/* Checks the frame-starting fragments of JPEG (not JPEG-LS) pixel data. */
std::string jpeg_fragments_problem(DcmDataset *ds, E_TransferSyntax xfer) {
    DcmElement *el = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, el).bad() || !el) return "";
    DcmPixelData *pd = OFstatic_cast(DcmPixelData *, el);
    DcmPixelSequence *seq = nullptr;
    if (pd->getEncapsulatedRepresentation(xfer, nullptr, seq).bad() || !seq) return "";
    unsigned long count = seq->card();
    for (unsigned long k = 1; k < count; k++) { /* item 0 is the offset table */
        DcmPixelItem *item = nullptr;
        Uint8 *data = nullptr;
        if (seq->getItem(item, k).bad() || !item || item->getUint8Array(data).bad()) continue;
        size_t n = item->getLength();
        if (k == 1 || (data && n >= 2 && data[0] == 0xFF && data[1] == 0xD8)) {
            std::string why = data ? jpeg_header_problem(data, n) : std::string("an empty JPEG fragment");
            if (!why.empty()) return why;
        }
    }
    return "";
}

std::string damage_reported(const std::string &warnings) {
    size_t start = 0;
    while (start < warnings.size()) {
        size_t end = warnings.find("; ", start);
        if (end == std::string::npos) end = warnings.size();
        std::string w = warnings.substr(start, end - start);
        bool corrupt = w.find("Corrupt JPEG data") != std::string::npos || w.find("Premature end of JPEG") != std::string::npos;
        if (corrupt && w.find("extraneous bytes") == std::string::npos) return w;
        start = end + 2;
    }
    return std::string();
}

/* Value pos of a string attribute, trimmed; empty when absent. */
std::string get_string_at(DcmItem *item, const DcmTagKey &tag, unsigned long pos) {
    OFString v;
    if (item->findAndGetOFString(tag, v, pos).bad()) return std::string();
    return trim(v);
}

/* Value pos of LUTDescriptor, whose VR is US or SS (the second value is
 * signed when the pixels are); false when absent. */
bool get_descriptor(DcmItem *item, unsigned long pos, bool is_signed, long *out) {
    Uint16 u = 0;
    Sint16 s = 0;
    if (item->findAndGetUint16(DCM_LUTDescriptor, u, pos).good())
        *out = (is_signed && pos == 1) ? (long)(Sint16)u : (long)u;
    else if (item->findAndGetSint16(DCM_LUTDescriptor, s, pos).good())
        *out = pos == 1 ? (long)s : (long)(Uint16)s;
    else
        return false;
    return true;
}

/* The LUT of a Modality or VOI LUT Sequence item into store and lut;
 * false when the item has no usable descriptor or too little LUTData. */
bool read_lut(DcmItem *item, bool is_signed, LutStore &store, lpnx_dicom_lut &lut) {
    long entries = 0, first = 0, bits = 0;
    if (!get_descriptor(item, 0, is_signed, &entries) || !get_descriptor(item, 1, is_signed, &first) ||
        !get_descriptor(item, 2, is_signed, &bits))
        return false;
    if (entries == 0) entries = 65536;
    if (bits < 1 || bits > 16) return false;
    const Uint16 *data = nullptr;
    unsigned long count = 0;
    if (item->findAndGetUint16Array(DCM_LUTData, data, &count).bad() || !data || count < (unsigned long)entries)
        return false;
    store.data.assign(data, data + entries);
    store.explanation = get_string(item, DCM_LUTExplanation);
    store.type = get_string(item, DCM_ModalityLUTType);
    lut.entries = (int)entries;
    lut.first_mapped = (int)first;
    lut.bits = (int)bits;
    lut.data = store.data.data();
    lut.explanation = store.explanation.empty() ? nullptr : store.explanation.c_str();
    lut.type = store.type.empty() ? nullptr : store.type.c_str();
    return true;
}

/* The presentation attributes (PS3.3 C.11) into d->info: every window,
 * the VOI LUT function, the Modality and VOI LUT Sequences and the
 * Presentation LUT Shape. Unusable values are left out, never an error:
 * the pixels can still be read. */
void read_presentation(lpnx_dicom *d, DcmDataset *ds) {
    lpnx_dicom_info &info = d->info;
    Uint16 pr = 0;
    get_us(ds, DCM_PixelRepresentation, &pr);
    bool is_signed = pr == 1;
    for (unsigned long k = 0;; k++) {
        double c = 0, w = 0;
        if (!get_number(ds, DCM_WindowCenter, k, &c) || !get_number(ds, DCM_WindowWidth, k, &w)) break;
        d->window_centers.push_back(c);
        d->window_widths.push_back(w);
        d->window_explanation_strings.push_back(get_string_at(ds, DCM_WindowCenterWidthExplanation, k));
    }
    for (const std::string &e : d->window_explanation_strings)
        d->window_explanations.push_back(e.empty() ? nullptr : e.c_str());
    info.window_count = (int)d->window_centers.size();
    info.window_centers = d->window_centers.data();
    info.window_widths = d->window_widths.data();
    info.window_explanations = d->window_explanations.data();
    d->voi_lut_function = get_string(ds, DCM_VOILUTFunction);
    info.voi_lut_function = d->voi_lut_function.empty() ? nullptr : d->voi_lut_function.c_str();
    d->presentation_lut_shape = get_string(ds, DCM_PresentationLUTShape);
    info.presentation_lut_shape = d->presentation_lut_shape.empty() ? nullptr : d->presentation_lut_shape.c_str();

    DcmItem *item = nullptr;
    if (ds->findAndGetSequenceItem(DCM_ModalityLUTSequence, item, 0).good() && item)
        info.has_modality_lut = read_lut(item, is_signed, d->modality_lut, info.modality_lut) ? 1 : 0;
    DcmSequenceOfItems *seq = nullptr;
    if (ds->findAndGetSequence(DCM_VOILUTSequence, seq).good() && seq) {
        unsigned long n = seq->card();
        d->voi_lut_stores.resize(n);
        for (unsigned long k = 0; k < n; k++) {
            lpnx_dicom_lut lut{};
            DcmItem *it = seq->getItem(k);
            if (it && read_lut(it, is_signed, d->voi_lut_stores[k], lut)) d->voi_luts.push_back(lut);
        }
    }
    info.voi_lut_count = (int)d->voi_luts.size();
    info.voi_luts = d->voi_luts.data();
}

/* ------------------------------------------------------------------ */
/* files whose meta header lies about their encoding                   */
/* ------------------------------------------------------------------ */

bool is_vr(const unsigned char *p) {
    static const char *const vrs[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB", "OD",
                                      "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI",
                                      "UL", "UN", "UR", "US", "UT", "UV"};
    for (const char *v : vrs)
        if (p[0] == (unsigned char)v[0] && p[1] == (unsigned char)v[1]) return true;
    return false;
}

/* When a file that DCMTK could not read has a meta header declaring one VR
 * encoding (explicit or implicit, little endian) while its data set starts
 * in the other, says so in words, and where the data set starts and how it
 * is really encoded. "" when that is not the trouble. */
std::string encoding_mismatch(const char *path, size_t *data_set_at = nullptr, bool *explicit_vr = nullptr) {
    FILE *f = fopen(path, "rb");
    if (!f) return "";
    std::vector<unsigned char> b(1 << 16);
    size_t n = fread(b.data(), 1, b.size(), f);
    fclose(f);
    if (n < 140 || memcmp(b.data() + 128, "DICM", 4) != 0) return "";
    /* the meta header: explicit VR little endian group 0002 elements */
    size_t i = 132;
    std::string ts;
    while (i + 8 <= n && b[i] == 0x02 && b[i + 1] == 0x00) {
        unsigned element = b[i + 2] | (b[i + 3] << 8);
        if (!is_vr(&b[i + 4])) return "";
        size_t len, head;
        bool long_form = memcmp(&b[i + 4], "OB", 2) == 0 || memcmp(&b[i + 4], "OW", 2) == 0 ||
                         memcmp(&b[i + 4], "UN", 2) == 0 || memcmp(&b[i + 4], "SQ", 2) == 0 ||
                         memcmp(&b[i + 4], "UT", 2) == 0 || memcmp(&b[i + 4], "UC", 2) == 0 ||
                         memcmp(&b[i + 4], "UR", 2) == 0;
        if (long_form) {
            if (i + 12 > n) return "";
            len = (size_t)b[i + 8] | ((size_t)b[i + 9] << 8) | ((size_t)b[i + 10] << 16) | ((size_t)b[i + 11] << 24);
            head = 12;
        } else {
            len = b[i + 6] | (b[i + 7] << 8);
            head = 8;
        }
        if (len > n || i + head + len > n) return "";
        if (element == 0x0010) ts = trim(OFString((const char *)&b[i + head], len));
        i += head + len;
    }
    if (ts.empty() || i + 8 > n) return "";
    DcmXfer xf(ts.c_str());
    if (xf.getXfer() == EXS_Unknown || !xf.isLittleEndian()) return "";
    bool declared_explicit = xf.isExplicitVR();
    bool found_explicit = is_vr(&b[i + 4]);
    if (declared_explicit == found_explicit) return "";
    if (data_set_at) *data_set_at = i;
    if (explicit_vr) *explicit_vr = found_explicit;
    char buf[400];
    std::snprintf(buf, sizeof buf,
                  "the file meta header declares transfer syntax %s (%s), whose data set is %s VR, but the data set "
                  "is written in %s VR (its first element, (%04x,%04x), %s)",
                  ts.c_str(), xf.getXferName(), declared_explicit ? "explicit" : "implicit",
                  declared_explicit ? "implicit" : "explicit", (unsigned)(b[i] | (b[i + 1] << 8)),
                  (unsigned)(b[i + 2] | (b[i + 3] << 8)), declared_explicit ? "has no VR" : "carries a VR");
    return buf;
}

/* Reads a file whose meta header mislabels the data set's VR encoding
 * (encoding_mismatch) as pydicom does: the meta header as it is, the data
 * set from `at` in the encoding it is really written in, and encapsulated
 * pixel data filed under the declared transfer syntax, so that it decodes
 * as declared. On success *declared is the syntax the meta header names. */
bool load_mislabelled(lpnx_dicom *d, const char *path, size_t at, bool explicit_vr, E_TransferSyntax *declared,
                      const LogScope &log, char *err, size_t errlen) {
    d->file.clear();
    OFCondition cond = d->file.loadFile(OFFilename(path), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_metaOnly);
    DcmMetaInfo *mi = d->file.getMetaInfo();
    std::string ts = mi ? get_string(mi, DCM_TransferSyntaxUID) : std::string();
    DcmXfer xf(ts.c_str());
    if (cond.bad() || xf.getXfer() == EXS_Unknown) {
        set_err(err, errlen, "cannot read the file meta header: %s%s", cond.text(), log.detail().c_str());
        return false;
    }
    E_TransferSyntax actual = explicit_vr ? EXS_LittleEndianExplicit : EXS_LittleEndianImplicit;
    DcmDataset *ds = d->file.getDataset();
    ds->clear();
    DcmInputFileStream in(OFFilename(path), (offile_off_t)at);
    cond = in.status();
    if (cond.good()) {
        ds->transferInit();
        cond = ds->read(in, actual, EGL_noChange, DCM_MaxReadLength);
        ds->transferEnd();
    }
    if (cond.good()) cond = ds->loadAllDataIntoMemory();
    if (cond.bad()) {
        set_err(err, errlen, "it does not read in %s VR either: %s%s", explicit_vr ? "explicit" : "implicit",
                cond.text(), log.detail().c_str());
        return false;
    }
    DcmElement *el = nullptr;
    if (xf.isEncapsulated() && ds->findAndGetElement(DCM_PixelData, el).good() && el) {
        DcmPixelData *pd = OFstatic_cast(DcmPixelData *, el);
        DcmPixelSequence *seq = nullptr;
        if (pd->getEncapsulatedRepresentation(actual, nullptr, seq).good() && seq)
            pd->putOriginalRepresentation(xf.getXfer(), nullptr, new DcmPixelSequence(*seq));
    }
    *declared = xf.getXfer();
    return true;
}

/* ------------------------------------------------------------------ */
/* frames lpnx decodes itself                                          */
/* ------------------------------------------------------------------ */

/* The JPEG 2000 transfer syntaxes: JPEG 2000 lossless only (.90) and
 * lossy or reversible (.91), and the three High-Throughput JPEG 2000 ones
 * (.201 lossless, .202 with RPCL progression, .203 lossy), which OpenJPEG
 * 2.5 decodes as it decodes Part 1 codestreams. */
bool is_j2k(const std::string &ts) {
    return ts == "1.2.840.10008.1.2.4.90" || ts == "1.2.840.10008.1.2.4.91" || ts == "1.2.840.10008.1.2.4.201" ||
           ts == "1.2.840.10008.1.2.4.202" || ts == "1.2.840.10008.1.2.4.203";
}

const char *j2k_name(const std::string &ts) {
    if (ts == "1.2.840.10008.1.2.4.90") return "JPEG 2000 (Lossless only)";
    if (ts == "1.2.840.10008.1.2.4.91") return "JPEG 2000";
    if (ts == "1.2.840.10008.1.2.4.201") return "HTJ2K (Lossless only)";
    if (ts == "1.2.840.10008.1.2.4.202") return "HTJ2K with RPCL Options (Lossless only)";
    return "HTJ2K";
}

bool starts_jpeg(const Uint8 *p, size_t n) { return n >= 2 && p[0] == 0xFF && p[1] == 0xD8; }
bool starts_j2k(const Uint8 *p, size_t n) {
    static const Uint8 jp2[4] = {0, 0, 0, 12};
    return (n >= 2 && p[0] == 0xFF && p[1] == 0x4F) || (n >= 8 && memcmp(p, jp2, 4) == 0 && memcmp(p + 4, "jP  ", 4) == 0);
}

/* The compressed bytes of frame `frame` (1-based) of nframes in the
 * pixel sequence: through the basic offset table when it has one entry a
 * frame, else one fragment a frame when the counts agree, else every
 * fragment for a single frame, else split where a fragment starts a new
 * stream (starts()). A frame of one fragment is pointed at, one of several
 * is joined into `joined`. Returns "" or what is wrong. */
std::string frame_bytes(DcmPixelSequence *seq, int nframes, int frame, bool (*starts)(const Uint8 *, size_t),
                        std::vector<Uint8> &joined, const Uint8 **out, size_t *outlen) {
    unsigned long count = seq->card();
    if (count < 2) return "the encapsulated pixel data has no fragments";
    struct Frag {
        const Uint8 *p;
        size_t n;
        unsigned long long at; /* offset of its item from the first fragment's */
    };
    std::vector<Frag> frags;
    unsigned long long at = 0;
    for (unsigned long k = 1; k < count; k++) {
        DcmPixelItem *item = nullptr;
        Uint8 *p = nullptr;
        if (seq->getItem(item, k).bad() || !item) return "a fragment of the pixel data cannot be read";
        size_t n = item->getLength();
        if (n > 0 && (item->getUint8Array(p).bad() || !p)) return "a fragment of the pixel data cannot be read";
        frags.push_back({p, n, at});
        at += 8 + (unsigned long long)n;
    }
    size_t first = 0, last = 0; /* [first, last) */
    DcmPixelItem *table = nullptr;
    Uint8 *t = nullptr;
    size_t tlen = 0;
    if (seq->getItem(table, 0).good() && table && (tlen = table->getLength()) == 4 * (size_t)nframes && nframes > 1 &&
        table->getUint8Array(t).good() && t) {
        /* offsets are little endian in the value as read (DCMTK keeps OB bytes as in the file) */
        std::vector<unsigned long long> offsets;
        for (int f = 0; f < nframes; f++)
            offsets.push_back((unsigned long long)t[4 * f] | ((unsigned long long)t[4 * f + 1] << 8) |
                              ((unsigned long long)t[4 * f + 2] << 16) | ((unsigned long long)t[4 * f + 3] << 24));
        unsigned long long begin = offsets[frame - 1], end = frame < nframes ? offsets[frame] : at;
        if (begin >= end) return "the basic offset table of the pixel data is not increasing";
        bool found = false;
        for (size_t i = 0; i < frags.size(); i++) {
            if (frags[i].at == begin) {
                first = i;
                found = true;
            }
        }
        if (!found) return "the basic offset table of the pixel data points between fragments";
        last = first;
        while (last < frags.size() && frags[last].at < end) last++;
    } else if (nframes == 1) {
        first = 0;
        last = frags.size();
    } else if ((size_t)nframes == frags.size()) {
        first = (size_t)frame - 1;
        last = first + 1;
    } else {
        int f = 0;
        size_t i = 0;
        for (; i < frags.size(); i++) {
            if (i == 0 || starts(frags[i].p, frags[i].n)) f++;
            if (f == frame) break;
        }
        if (f != frame) return "fewer compressed frames in the pixel data than NumberOfFrames";
        first = i;
        last = i + 1;
        while (last < frags.size() && !starts(frags[last].p, frags[last].n)) last++;
    }
    if (last - first == 1) {
        *out = frags[first].p;
        *outlen = frags[first].n;
    } else {
        joined.clear();
        for (size_t i = first; i < last; i++) joined.insert(joined.end(), frags[i].p, frags[i].p + frags[i].n);
        *out = joined.data();
        *outlen = joined.size();
    }
    if (*outlen == 0) return "an empty compressed frame";
    return "";
}

/* The pixel sequence of the encapsulated PixelData, or nullptr. */
DcmPixelSequence *pixel_sequence(DcmDataset *ds, E_TransferSyntax xfer) {
    DcmElement *el = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, el).bad() || !el) return nullptr;
    DcmPixelData *pd = OFstatic_cast(DcmPixelData *, el);
    DcmPixelSequence *seq = nullptr;
    if (pd->getEncapsulatedRepresentation(xfer, nullptr, seq).bad()) return nullptr;
    return seq;
}

/* Decodes the chosen frame of JPEG baseline or extended 8-bit pixel data
 * with libjpeg-turbo into d->own_bytes. False (nothing kept) when the
 * frame is not one it takes: the caller then decodes with DCMTK, which
 * also reports every damaged stream as before. */
bool turbo_frame(lpnx_dicom *d, DcmDataset *ds, E_TransferSyntax xfer, const std::string &pm, Uint16 rows,
                 Uint16 columns, Uint16 samples, Uint16 ba, int nframes, int frame) {
    if ((xfer != EXS_JPEGProcess1 && xfer != EXS_JPEGProcess2_4) || ba != 8) return false;
    bool ycbcr = pm == "YBR_FULL_422" || pm == "YBR_FULL";
    if (samples == 3 && !ycbcr) return false;
    if (!jpeg_fragments_problem(ds, xfer).empty()) return false;
    DcmPixelSequence *seq = pixel_sequence(ds, xfer);
    if (!seq) return false;
    std::vector<Uint8> joined;
    const Uint8 *p = nullptr;
    size_t n = 0;
    if (!frame_bytes(seq, nframes, frame, starts_jpeg, joined, &p, &n).empty()) return false;
    char why[200];
    if (lpnx_jpeg_turbo_decode(nullptr, p, n, rows, columns, samples, ycbcr ? 1 : 0, why, sizeof why) != 0) return false;
    d->own_bytes.resize((size_t)rows * columns * samples);
    if (lpnx_jpeg_turbo_decode(d->own_bytes.data(), p, n, rows, columns, samples, ycbcr ? 1 : 0, why, sizeof why) != 0) {
        d->own_bytes.clear();
        return false;
    }
    d->one_frame = true;
    return true;
}

int open_file(lpnx_dicom *d, const char *path, long long frame, char *err, size_t errlen) {
    LogScope log;
    if (!lpnx_dcm::check_path(path, err, errlen) || !sniff(path, err, errlen)) return -1;
    E_TransferSyntax mislabelled = EXS_Unknown; /* the declared syntax of a mislabelled file */
    if (!lpnx_dcm::load_file(d->file, path, log, err, errlen)) {
        size_t at = 0;
        bool explicit_vr = false;
        std::string lie = encoding_mismatch(path, &at, &explicit_vr);
        if (lie.empty()) return -1;
        char why[400] = "";
        if (!load_mislabelled(d, path, at, explicit_vr, &mislabelled, log, why, sizeof why)) {
            set_err(err, errlen, "%s; %s", lie.c_str(), why);
            return -1;
        }
    }
    OFCondition cond;
    DcmDataset *ds = d->file.getDataset();
    DcmMetaInfo *mi = d->file.getMetaInfo();
    lpnx_dicom_info &info = d->info;

    E_TransferSyntax xfer = mislabelled != EXS_Unknown ? mislabelled : ds->getOriginalXfer();
    DcmXfer xf(xfer);
    d->ts_uid = mi ? get_string(mi, DCM_TransferSyntaxUID) : std::string();
    if (d->ts_uid.empty()) d->ts_uid = xf.getXferID();
    d->ts_name = xfer == EXS_Unknown ? "unknown" : xf.getXferName();
    info.transfer_syntax = d->ts_uid.c_str();
    info.transfer_syntax_name = d->ts_name.c_str();

    for (int i = 0; i < LPNX_DICOM_NSTRINGS; i++) {
        d->strings[i] =
            all_values(string_tags[i]) ? get_all_strings(ds, string_tags[i]) : get_string(ds, string_tags[i]);
        info.strings[i].key = string_keys[i];
        info.strings[i].value = d->strings[i].empty() ? nullptr : d->strings[i].c_str();
    }
    info.has_rescale_slope = get_number(ds, DCM_RescaleSlope, 0, &info.rescale_slope);
    info.has_rescale_intercept = get_number(ds, DCM_RescaleIntercept, 0, &info.rescale_intercept);
    info.has_window_center = get_number(ds, DCM_WindowCenter, 0, &info.window_center);
    info.has_window_width = get_number(ds, DCM_WindowWidth, 0, &info.window_width);
    info.has_pixel_spacing = get_number(ds, DCM_PixelSpacing, 0, &info.pixel_spacing[0]) &&
                             get_number(ds, DCM_PixelSpacing, 1, &info.pixel_spacing[1]);
    info.has_imager_pixel_spacing = get_number(ds, DCM_ImagerPixelSpacing, 0, &info.imager_pixel_spacing[0]) &&
                                    get_number(ds, DCM_ImagerPixelSpacing, 1, &info.imager_pixel_spacing[1]);
    if (!info.has_pixel_spacing && info.has_imager_pixel_spacing) {
        info.has_pixel_spacing = 1;
        info.pixel_spacing_is_imager = 1;
        info.pixel_spacing[0] = info.imager_pixel_spacing[0];
        info.pixel_spacing[1] = info.imager_pixel_spacing[1];
    }
    info.has_magnification_factor =
        get_number(ds, DCM_EstimatedRadiographicMagnificationFactor, 0, &info.magnification_factor);

    read_presentation(d, ds);

    DcmElement *pixel = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, pixel).bad() || !pixel) {
        set_err(err, errlen, "no PixelData element (not an image)");
        return -1;
    }

    /* image attributes */
    Uint16 rows = 0, columns = 0, samples = 1, ba = 0, bs = 0, hb = 0, pr = 0, planar = 0;
    if (!get_us(ds, DCM_Rows, &rows)) {
        set_err(err, errlen, "no Rows attribute");
        return -1;
    }
    if (!get_us(ds, DCM_Columns, &columns)) {
        set_err(err, errlen, "no Columns attribute");
        return -1;
    }
    if (!get_us(ds, DCM_BitsAllocated, &ba)) {
        set_err(err, errlen, "no BitsAllocated attribute");
        return -1;
    }
    get_us(ds, DCM_SamplesPerPixel, &samples);
    if (!get_us(ds, DCM_BitsStored, &bs)) bs = ba;
    if (!get_us(ds, DCM_HighBit, &hb)) hb = bs ? (Uint16)(bs - 1) : 0;
    get_us(ds, DCM_PixelRepresentation, &pr);
    get_us(ds, DCM_PlanarConfiguration, &planar);
    double frames_d = 1;
    if (ds->tagExistsWithValue(DCM_NumberOfFrames)) {
        if (!get_number(ds, DCM_NumberOfFrames, 0, &frames_d) || frames_d != std::floor(frames_d)) {
            set_err(err, errlen, "NumberOfFrames is not an integer");
            return -1;
        }
    }
    d->photometric = get_string(ds, DCM_PhotometricInterpretation);
    if (d->photometric.empty() && samples == 1) d->photometric = "MONOCHROME2";
    info.photometric = d->photometric.c_str();

    if (rows == 0 || columns == 0) {
        set_err(err, errlen, "empty image (%u rows x %u columns)", (unsigned)rows, (unsigned)columns);
        return -1;
    }
    if (frames_d < 1) {
        set_err(err, errlen, "NumberOfFrames is %.0f", frames_d);
        return -1;
    }
    if (samples != 1 && samples != 3) {
        set_err(err, errlen, "SamplesPerPixel %u is not supported (1 or 3)", (unsigned)samples);
        return -1;
    }
    if (ba != 8 && ba != 16) {
        set_err(err, errlen, "BitsAllocated %u is not supported (8 or 16)", (unsigned)ba);
        return -1;
    }
    if (bs < 1 || bs > ba || hb < bs - 1 || hb >= ba) {
        set_err(err, errlen, "inconsistent bits: BitsAllocated %u, BitsStored %u, HighBit %u", (unsigned)ba,
                (unsigned)bs, (unsigned)hb);
        return -1;
    }
    if (pr > 1) {
        set_err(err, errlen, "PixelRepresentation %u is not 0 or 1", (unsigned)pr);
        return -1;
    }
    double values = (double)rows * columns * samples * frames_d;
    if (values > LPNX_DICOM_MAX_VALUES) {
        set_err(err, errlen, "image too large (%u rows x %u columns x %.0f frames x %u samples is more than 2^31 - 1 values)",
                (unsigned)rows, (unsigned)columns, frames_d, (unsigned)samples);
        return -1;
    }
    const std::string &pm = d->photometric;
    bool mono = pm == "MONOCHROME1" || pm == "MONOCHROME2";
    bool color = pm == "RGB" || pm == "YBR_FULL" || pm == "YBR_FULL_422" || pm == "YBR_PARTIAL_422" ||
                 pm == "YBR_ICT" || pm == "YBR_RCT";
    if (!(mono && samples == 1) && !(color && samples == 3)) {
        set_err(err, errlen, "PhotometricInterpretation '%s' with %u samples per pixel is not supported",
                pm.c_str(), (unsigned)samples);
        return -1;
    }
    int nframes = (int)frames_d;
    if (frame < 1 || frame > nframes) {
        set_err(err, errlen, "frame %lld out of range (the file has %d frame%s)", frame, nframes, nframes == 1 ? "" : "s");
        return -1;
    }
    info.rows = rows;
    info.columns = columns;
    info.number_of_frames = nframes;
    info.frame = (int)frame;
    info.samples_per_pixel = samples;
    info.channels = samples;
    info.bits_allocated = ba;
    info.bits_stored = bs;
    info.high_bit = hb;
    info.pixel_representation = pr;


    /* decode: JPEG 2000 with OpenJPEG and 8-bit JPEG with libjpeg-turbo
     * here (the chosen frame only), the rest by DCMTK's decoders, which
     * give native pixel data in memory */
    std::string decoded = pm;
    if (is_j2k(d->ts_uid)) {
        /* DCMTK 3.6.7 does not know the HTJ2K syntaxes (it reads their
         * data set as explicit VR little endian) */
        if (xfer != EXS_JPEG2000LosslessOnly && xfer != EXS_JPEG2000) {
            d->ts_name = j2k_name(d->ts_uid);
            info.transfer_syntax_name = d->ts_name.c_str();
        }
        DcmPixelSequence *seq = pixel_sequence(ds, xfer);
        if (!seq) {
            set_err(err, errlen, "the %s pixel data is not encapsulated", d->ts_name.c_str());
            return -1;
        }
        std::vector<Uint8> joined;
        const Uint8 *p = nullptr;
        size_t n = 0;
        std::string why = frame_bytes(seq, nframes, (int)frame, starts_j2k, joined, &p, &n);
        lpnx_j2k_want want{rows, columns, samples, ba, bs, pr};
        char why_j2k[300] = "";
        /* the header first, so that only a frame that declares this size is given memory */
        if (why.empty() && lpnx_j2k_decode(nullptr, p, n, &want, nullptr, why_j2k, sizeof why_j2k) != 0) why = why_j2k;
        if (why.empty()) {
            size_t count = (size_t)rows * columns * samples;
            if (ba == 8)
                d->own_bytes.resize(count);
            else
                d->own_words.resize(count);
            if (lpnx_j2k_decode(ba == 8 ? (void *)d->own_bytes.data() : (void *)d->own_words.data(), p, n, &want,
                                nullptr, why_j2k, sizeof why_j2k) != 0)
                why = why_j2k;
        }
        if (!why.empty()) {
            set_err(err, errlen, "cannot decode the %s pixel data (frame %lld): %s", d->ts_name.c_str(), frame,
                    why.c_str());
            return -1;
        }
        d->one_frame = true;
        /* OpenJPEG undoes the colour transform of YBR_ICT / YBR_RCT; its
         * components are never subsampled (checked) */
        if (samples == 3 && (pm == "YBR_ICT" || pm == "YBR_RCT")) decoded = "RGB";
        if (pm == "YBR_FULL_422" || pm == "YBR_PARTIAL_422") {
            set_err(err, errlen, "PhotometricInterpretation '%s' does not fit %s pixel data (its components are "
                    "full size)", pm.c_str(), d->ts_name.c_str());
            return -1;
        }
        planar = 0;
    } else if (xfer == EXS_Unknown) {
        set_err(err, errlen, "unknown transfer syntax %s", d->ts_uid.c_str());
        return -1;
    } else if (xf.isEncapsulated() && turbo_frame(d, ds, xfer, pm, rows, columns, samples, ba, nframes, (int)frame)) {
        if (samples == 3) decoded = "RGB";
        planar = 0;
    } else if (xf.isEncapsulated()) {
        if (!DcmCodecList::canChangeCoding(xfer, EXS_LittleEndianExplicit)) {
            set_err(err, errlen, "unsupported transfer syntax %s (%s): DCMTK has no decoder for it", d->ts_uid.c_str(),
                    d->ts_name.c_str());
            return -1;
        }
        /* JPEG processes 1-14 (UIDs .4.50 to .4.70), not JPEG-LS or JPEG 2000 */
        const std::string &ts = d->ts_uid;
        if (ts.rfind("1.2.840.10008.1.2.4.", 0) == 0) {
            int process = std::atoi(ts.c_str() + 20);
            if (process >= 50 && process <= 70) {
                std::string why = jpeg_fragments_problem(ds, xfer);
                if (!why.empty()) {
                    set_err(err, errlen, "corrupt %s pixel data (%s)", d->ts_name.c_str(), why.c_str());
                    return -1;
                }
            }
        }
        std::string short_rle = rle_capacity_problem(ds, xfer, values * (ba / 8));
        if (!short_rle.empty()) {
            set_err(err, errlen, "corrupt %s pixel data (%s)", d->ts_name.c_str(), short_rle.c_str());
            return -1;
        }
        log.captured.warnings.clear();
        cond = ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr);

        if (cond.bad() || !ds->canWriteXfer(EXS_LittleEndianExplicit)) {
            set_err(err, errlen, "cannot decode the %s pixel data: %s%s", d->ts_name.c_str(),
                    cond.bad() ? cond.text() : "no uncompressed representation", log.detail().c_str());
            return -1;
        }
        std::string damage = damage_reported(log.captured.warnings);
        if (!damage.empty()) {
            set_err(err, errlen, "corrupt %s pixel data (%s)", d->ts_name.c_str(), damage.c_str());
            return -1;
        }
        if (ds->findAndGetElement(DCM_PixelData, pixel).bad() || !pixel) {
            set_err(err, errlen, "no PixelData after decoding");
            return -1;
        }
        /* The decoders update these (a YBR JPEG comes out as RGB). */
        std::string after = get_string(ds, DCM_PhotometricInterpretation);
        if (!after.empty()) decoded = after;
        get_us(ds, DCM_PlanarConfiguration, &planar);
    }
    if (decoded == "MONOCHROME1" || decoded == "MONOCHROME2") {
        d->color = GRAY;
        d->monochrome1 = decoded == "MONOCHROME1";
    } else if (decoded == "RGB") {
        d->color = RGB;
    } else if (decoded == "YBR_FULL") {
        d->color = YBR_FULL;
    } else if (decoded == "YBR_FULL_422") {
        d->color = YBR_FULL_422;
    } else if (decoded == "YBR_PARTIAL_422") {
        d->color = YBR_PARTIAL_422;
    } else {
        set_err(err, errlen, "PhotometricInterpretation '%s' of the decoded pixel data is not supported",
                decoded.c_str());
        return -1;
    }
    if ((d->color == GRAY) != (samples == 1)) {
        set_err(err, errlen, "PhotometricInterpretation '%s' of the decoded pixel data does not fit %u samples per pixel",
                decoded.c_str(), (unsigned)samples);
        return -1;
    }
    d->planar = planar == 1 ? 1 : 0;
    bool subsampled = d->color == YBR_FULL_422 || d->color == YBR_PARTIAL_422;
    if (subsampled && (columns % 2 != 0 || ba != 8)) {
        set_err(err, errlen, "uncompressed %s needs an even number of columns and 8 bits (got %u columns, %u bits)",
                decoded.c_str(), (unsigned)columns, (unsigned)ba);
        return -1;
    }

    /* the raw words, and enough of them for every frame */
    unsigned per_pixel = subsampled ? 2u : (unsigned)samples;
    int held = d->one_frame ? 1 : nframes;
    double need = (double)rows * columns * per_pixel * held * (ba / 8);
    size_t have = 0;
    if (d->one_frame) {
        d->bytes = ba == 8 ? d->own_bytes.data() : nullptr;
        d->words = ba == 8 ? nullptr : d->own_words.data();
        have = ba == 8 ? d->own_bytes.size() : 2 * d->own_words.size();
    } else if (ba == 8) {
        Uint8 *p = nullptr;
        cond = pixel->getUint8Array(p);
        d->bytes = p;
    } else {
        Uint16 *p = nullptr;
        cond = pixel->getUint16Array(p);
        d->words = p;
    }
    if (!d->one_frame) have = pixel->getLength();
    if (cond.bad() || (!d->bytes && !d->words)) {
        set_err(err, errlen, "cannot read PixelData: %s%s", cond.bad() ? cond.text() : "no value",
                log.detail().c_str());
        return -1;
    }
    if ((double)have < need) {
        set_err(err, errlen,
                "PixelData holds %lu bytes, expected %.0f (%u rows x %u columns x %d frame%s x %u samples x %u bytes)",
                (unsigned long)have, need, (unsigned)rows, (unsigned)columns, held, held == 1 ? "" : "s",
                per_pixel, (unsigned)(ba / 8));
        return -1;
    }
    if (mono) {
        if (info.has_rescale_slope) d->slope = info.rescale_slope;
        if (info.has_rescale_intercept) d->intercept = info.rescale_intercept;
    }
    return 0;
}

/* The stored value in word w: bits [high_bit - bits_stored + 1, high_bit],
 * sign-extended when sign != 0 (sign = the top stored bit). */
struct Unpack {
    int shift;
    uint32_t mask, sign;
    int32_t operator()(uint32_t w) const {
        uint32_t v = (w >> shift) & mask;
        return (sign && (v & sign)) ? (int32_t)v - (int32_t)mask - 1 : (int32_t)v;
    }
};

/* Raw sample i of the frame, 8- or 16-bit. */
struct Frame {
    const Uint8 *bytes;
    const Uint16 *words;
    uint32_t operator[](size_t i) const { return bytes ? bytes[i] : words[i]; }
};

inline float clamp_round(double v, double top) {
    v = std::nearbyint(v);
    return (float)(v < 0 ? 0 : v > top ? top : v);
}

void to_rgb(Color color, double top, double mid, int32_t a, int32_t b, int32_t c, float *r, float *g, float *bl) {
    double y = a, cb = b - mid, cr = c - mid;
    if (color == RGB) {
        *r = (float)a;
        *g = (float)b;
        *bl = (float)c;
        return;
    }
    if (color == YBR_PARTIAL_422) { /* PS3.3 C.7.6.3.1.2, scaled to the stored range */
        double k = (top + 1) / 256.0;
        y = 1.1644 * (y - 16 * k);
        *r = clamp_round(y + 1.5960 * cr, top);
        *g = clamp_round(y - 0.3918 * cb - 0.8130 * cr, top);
        *bl = clamp_round(y + 2.0172 * cb, top);
        return;
    }
    *r = clamp_round(y + 1.402 * cr, top);
    *g = clamp_round(y - 0.344136 * cb - 0.714136 * cr, top);
    *bl = clamp_round(y + 1.772 * cb, top);
}

void pixels(const lpnx_dicom *d, float *out) {
    const lpnx_dicom_info &info = d->info;
    size_t hw = (size_t)info.rows * (size_t)info.columns;
    int bs = info.bits_stored;
    Unpack unpack{info.high_bit + 1 - bs, bs >= 32 ? 0xFFFFFFFFu : (1u << bs) - 1u,
                  info.pixel_representation ? 1u << (bs - 1) : 0u};
    bool subsampled = d->color == YBR_FULL_422 || d->color == YBR_PARTIAL_422;
    size_t per_frame = hw * (subsampled ? 2 : (size_t)info.samples_per_pixel);
    size_t base = d->one_frame ? 0 : per_frame * (size_t)(info.frame - 1);
    Frame f{d->bytes ? d->bytes + base : nullptr, d->words ? d->words + base : nullptr};
    if (d->color == GRAY) {
        /* MONOCHROME1: min + max - v on the stored range, which is
         * mask - v unsigned and -1 - v signed. */
        int32_t flip = unpack.sign ? -1 : (int32_t)unpack.mask;
        double slope = d->slope, intercept = d->intercept;
        for (size_t i = 0; i < hw; i++) {
            int32_t v = unpack(f[i]);
            if (d->monochrome1) v = flip - v;
            out[i] = (float)((double)v * slope + intercept);
        }
        return;
    }
    double top = (double)unpack.mask, mid = (double)(unpack.mask / 2 + 1);
    float *r = out, *g = out + hw, *b = out + 2 * hw;
    size_t columns = (size_t)info.columns;
    for (size_t i = 0; i < hw; i++) {
        int32_t s0, s1, s2;
        if (subsampled) { /* Y1 Y2 Cb Cr per pair of pixels */
            size_t row = i / columns, col = i % columns, pair = row * columns * 2 + (col / 2) * 4;
            s0 = unpack(f[pair + (col & 1)]);
            s1 = unpack(f[pair + 2]);
            s2 = unpack(f[pair + 3]);
        } else if (d->planar) {
            s0 = unpack(f[i]);
            s1 = unpack(f[hw + i]);
            s2 = unpack(f[2 * hw + i]);
        } else {
            s0 = unpack(f[3 * i]);
            s1 = unpack(f[3 * i + 1]);
            s2 = unpack(f[3 * i + 2]);
        }
        to_rgb(d->color, top, mid, s0, s1, s2, r + i, g + i, b + i);
    }
}

/* ------------------------------------------------------------------ */
/* writing                                                             */
/* ------------------------------------------------------------------ */

/* DCMTK's site root has study (.1.2), series (.1.3) and instance (.1.4)
 * sub-roots; frames of reference get .1.5 beside them. */
#define FRAME_OF_REFERENCE_UID_ROOT SITE_UID_ROOT ".1.5"

int write_file(const char *path, const void *pixels_in, int rows, int columns,
               const lpnx_dicom_write_meta *meta, int jpeg, int quality, lpnx_dicom_uids *uids, char *err,
               size_t errlen) {
    LogScope log;
    if (!pixels_in || rows < 1 || columns < 1 || rows > 65535 || columns > 65535) {
        set_err(err, errlen, "image size %d x %d is outside 1..65535", rows, columns);
        return -1;
    }
    if (jpeg && (quality < 1 || quality > 100)) {
        set_err(err, errlen, "JPEG quality %d is outside 1..100", quality);
        return -1;
    }
    const lpnx_dicom_write_meta none{};
    if (!meta) meta = &none;
    int samples = meta->samples_per_pixel == 0 ? 1 : meta->samples_per_pixel;
    if (samples != 1 && samples != 3) {
        set_err(err, errlen, "%d samples per pixel (expected 1 or 3)", samples);
        return -1;
    }
    int bits = meta->bits_stored == 0 ? 8 : meta->bits_stored;
    bool words = bits > 8;
    if (bits != 8 && (bits < 9 || bits > 16)) {
        set_err(err, errlen, "%d bits stored (expected 8, or 9..16 for 16-bit words)", bits);
        return -1;
    }
    if ((words || meta->monochrome1 || meta->dx) && samples != 1) {
        set_err(err, errlen, "16-bit, MONOCHROME1 and DX images are monochrome (1 sample per pixel, got %d)", samples);
        return -1;
    }
    if (words && jpeg) {
        set_err(err, errlen, "JPEG baseline holds 8-bit images only: write %d-bit pixels uncompressed", bits);
        return -1;
    }
    if (words) {
        const Uint16 *w = static_cast<const Uint16 *>(pixels_in);
        size_t n = (size_t)rows * (size_t)columns;
        for (size_t i = 0; i < n; i++)
            if (w[i] >> bits) {
                set_err(err, errlen, "pixel %zu is %u, above the %d-bit range", i + 1, (unsigned)w[i], bits);
                return -1;
            }
    }
    if (meta->has_window && !(std::isfinite(meta->window_center) && std::isfinite(meta->window_width) &&
                              meta->window_width >= 1)) {
        set_err(err, errlen, "window center %g, width %g: expected finite numbers, width >= 1", meta->window_center,
                meta->window_width);
        return -1;
    }

    struct Field {
        const char *name;
        const char *value;
        DcmTagKey tag;
        Vr vr;
        const char *dflt; /* nullptr: leave out when not given; "": empty (Type 2) */
    };
    const Field fields[] = {
        {"patient_name", meta->patient_name, DCM_PatientName, VR_PN, ""},
        {"patient_id", meta->patient_id, DCM_PatientID, VR_LO, ""},
        {"patient_sex", meta->patient_sex, DCM_PatientSex, VR_CS, ""},
        {"patient_age", meta->patient_age, DCM_PatientAge, VR_AS, nullptr},
        {"study_date", meta->study_date, DCM_StudyDate, VR_DA, ""},
        {"study_time", meta->study_time, DCM_StudyTime, VR_TM, ""},
        {"study_id", meta->study_id, DCM_StudyID, VR_SH, ""},
        {"modality", meta->modality, DCM_Modality, VR_CS, meta->dx ? "DX" : "CR"},
        {"view_position", meta->view_position, DCM_ViewPosition, VR_CS, nullptr},
        {"body_part_examined", meta->body_part_examined, DCM_BodyPartExamined, VR_CS, nullptr},
        {"series_description", meta->series_description, DCM_SeriesDescription, VR_LO, nullptr},
        {"series_number", meta->series_number, DCM_SeriesNumber, VR_IS, "1"},
        {"instance_number", meta->instance_number, DCM_InstanceNumber, VR_IS, "1"},
        {"derivation_description", meta->derivation_description, DCM_DerivationDescription, VR_ST, nullptr},
        {"burned_in_annotation", meta->burned_in_annotation, DCM_BurnedInAnnotation, VR_CS, nullptr},
    };
    bool utf8 = false;
    for (const Field &fd : fields) utf8 = utf8 || non_ascii(fd.value);
    const char *charset = utf8 ? "ISO_IR 192" : "";
    for (const Field &fd : fields) {
        if (fd.value && !valid(fd.vr, fd.value, "1", charset)) {
            set_err(err, errlen, "meta.%s '%.80s' is not a valid %s", fd.name, fd.value, vr_name(fd.vr));
            return -1;
        }
    }
    if (meta->burned_in_annotation && strcmp(meta->burned_in_annotation, "YES") != 0 &&
        strcmp(meta->burned_in_annotation, "NO") != 0) {
        set_err(err, errlen, "meta.burned_in_annotation '%.80s' is neither YES nor NO", meta->burned_in_annotation);
        return -1;
    }
    if (meta->has_pixel_spacing && !check_spacing("meta", meta->pixel_spacing, err, errlen)) return -1;
    const char *source[2] = {meta->source_sop_class_uid, meta->source_sop_instance_uid};
    const char *source_names[2] = {"source.sop_class_uid", "source.sop_instance_uid"};
    bool derived = source[0] || source[1];
    for (int k = 0; k < 2 && derived; k++) {
        if (!source[k] || !*source[k]) {
            set_err(err, errlen, "meta.%s is required when the image has a source", source_names[k]);
            return -1;
        }
        if (!valid(VR_UI, source[k], "1", "")) {
            set_err(err, errlen, "meta.%s '%.80s' is not a valid %s", source_names[k], source[k], vr_name(VR_UI));
            return -1;
        }
    }

    /* UIDs: given (checked) or generated */
    struct Uid {
        const char *name;
        const char *given;
        char *out;
        const char *root;
    };
    lpnx_dicom_uids u{};
    snprintf(u.sop_class_uid, sizeof u.sop_class_uid, "%s",
             meta->dx ? UID_DigitalXRayImageStorageForPresentation : UID_SecondaryCaptureImageStorage);
    const Uid uid_list[] = {
        {"sop_instance_uid", meta->sop_instance_uid, u.sop_instance_uid, SITE_INSTANCE_UID_ROOT},
        {"study_instance_uid", meta->study_instance_uid, u.study_instance_uid, SITE_STUDY_UID_ROOT},
        {"series_instance_uid", meta->series_instance_uid, u.series_instance_uid, SITE_SERIES_UID_ROOT},
        {"frame_of_reference_uid", meta->frame_of_reference_uid, u.frame_of_reference_uid, FRAME_OF_REFERENCE_UID_ROOT},
    };
    for (const Uid &x : uid_list) {
        if (x.given) {
            if (!valid(VR_UI, x.given, "1", "")) {
                set_err(err, errlen, "meta.%s '%.80s' is not a valid %s", x.name, x.given, vr_name(VR_UI));
                return -1;
            }
            snprintf(x.out, 65, "%s", x.given);
        } else {
            dcmGenerateUniqueIdentifier(x.out, x.root);
        }
    }

    DcmFileFormat file;
    DcmDataset *ds = file.getDataset();
    OFCondition c = EC_Normal;
    auto put = [&](const DcmTagKey &tag, const char *v) {
        if (c.good()) c = ds->putAndInsertString(tag, v);
    };
    auto put16 = [&](const DcmTagKey &tag, Uint16 v) {
        if (c.good()) c = ds->putAndInsertUint16(tag, v);
    };
    if (utf8) put(DCM_SpecificCharacterSet, "ISO_IR 192");
    put(DCM_SOPClassUID, u.sop_class_uid);
    put(DCM_SOPInstanceUID, u.sop_instance_uid);
    put(DCM_AccessionNumber, "");
    if (!meta->dx) put(DCM_ConversionType, "WSD");
    put(DCM_ReferringPhysicianName, "");
    put(DCM_PatientBirthDate, "");
    put(DCM_StudyInstanceUID, u.study_instance_uid);
    put(DCM_SeriesInstanceUID, u.series_instance_uid);
    put(DCM_PatientOrientation, "");
    put(DCM_FrameOfReferenceUID, u.frame_of_reference_uid);
    for (const Field &fd : fields) {
        const char *v = fd.value ? fd.value : fd.dflt;
        if (v) put(fd.tag, v);
    }
    if (meta->has_pixel_spacing) {
        std::string ps = format_ds(meta->pixel_spacing[0]) + "\\" + format_ds(meta->pixel_spacing[1]);
        put(DCM_PixelSpacing, ps.c_str());
    }
    if (derived) {
        /* the source, once as what the pixels were derived from and once
         * as the image they belong with */
        put(DCM_ImageType, "DERIVED\\SECONDARY");
        for (const DcmTagKey &seq : {DCM_SourceImageSequence, DCM_ReferencedImageSequence}) {
            DcmItem *item = nullptr;
            if (c.good()) c = ds->findOrCreateSequenceItem(seq, item, -2);
            if (c.good() && item) c = item->putAndInsertString(DCM_ReferencedSOPClassUID, source[0]);
            if (c.good() && item) c = item->putAndInsertString(DCM_ReferencedSOPInstanceUID, source[1]);
        }
    }
    if (meta->dx) {
        /* the Type 1 and 2 attributes of the DX Series, DX Image, DX
         * Anatomy Imaged and DX Detector modules */
        put(DCM_PresentationIntentType, "FOR PRESENTATION");
        if (!derived) put(DCM_ImageType, "ORIGINAL\\PRIMARY");
        put(DCM_PixelIntensityRelationship, "LOG");
        /* +1: lower values are less X-ray intensity (white in MONOCHROME1) */
        put(DCM_PixelIntensityRelationshipSign, meta->monochrome1 ? "1" : "-1");
        put(DCM_RescaleIntercept, "0");
        put(DCM_RescaleSlope, "1");
        put(DCM_RescaleType, "US");
        put(DCM_PresentationLUTShape, meta->monochrome1 ? "INVERSE" : "IDENTITY");
        put(DCM_LossyImageCompression, "00");
        if (!meta->burned_in_annotation) put(DCM_BurnedInAnnotation, "NO");
        put(DCM_ImageLaterality, "U");
        put(DCM_PatientOrientation, "L\\F"); /* a chest film as it is read: patient's left, feet */
        put(DCM_PositionReferenceIndicator, "");
        if (c.good()) c = ds->insertEmptyElement(DCM_AcquisitionContextSequence);
        put(DCM_DetectorType, "");
        put(DCM_Manufacturer, "");
        put(DCM_ContentDate, "");
        put(DCM_ContentTime, "");
        if (meta->has_pixel_spacing) {
            std::string ps = format_ds(meta->pixel_spacing[0]) + "\\" + format_ds(meta->pixel_spacing[1]);
            put(DCM_ImagerPixelSpacing, ps.c_str());
        }
        DcmItem *region = nullptr;
        if (c.good()) c = ds->findOrCreateSequenceItem(DCM_AnatomicRegionSequence, region, -2);
        if (c.good() && region) c = region->putAndInsertString(DCM_CodeValue, "51185008");
        if (c.good() && region) c = region->putAndInsertString(DCM_CodingSchemeDesignator, "SCT");
        if (c.good() && region) c = region->putAndInsertString(DCM_CodeMeaning, "Chest");
    }
    if (meta->has_window) {
        put(DCM_WindowCenter, format_ds(meta->window_center).c_str());
        put(DCM_WindowWidth, format_ds(meta->window_width).c_str());
    }
    put16(DCM_SamplesPerPixel, (Uint16)samples);
    put(DCM_PhotometricInterpretation, samples == 3 ? "RGB" : meta->monochrome1 ? "MONOCHROME1" : "MONOCHROME2");
    if (samples == 3) put16(DCM_PlanarConfiguration, 0);
    put16(DCM_Rows, (Uint16)rows);
    put16(DCM_Columns, (Uint16)columns);
    put16(DCM_BitsAllocated, words ? 16 : 8);
    put16(DCM_BitsStored, (Uint16)bits);
    put16(DCM_HighBit, (Uint16)(bits - 1));
    put16(DCM_PixelRepresentation, 0);
    unsigned long count = (unsigned long)rows * (unsigned long)columns * (unsigned long)samples;
    if (c.good())
        c = words ? ds->putAndInsertUint16Array(DCM_PixelData, static_cast<const Uint16 *>(pixels_in), count)
                  : ds->putAndInsertUint8Array(DCM_PixelData, static_cast<const Uint8 *>(pixels_in), count);
    if (c.bad()) {
        set_err(err, errlen, "cannot build the data set: %s%s", c.text(), log.detail().c_str());
        return -1;
    }
    E_TransferSyntax xfer = EXS_LittleEndianExplicit;
    if (jpeg) {
        xfer = EXS_JPEGProcess1;
        /* the lossy encoder makes the first value DERIVED: keep a second */
        if (!derived) put(DCM_ImageType, "ORIGINAL\\PRIMARY");
        DJ_RPLossy param(quality);
        c = ds->chooseRepresentation(xfer, &param);
        if (c.bad() || !ds->canWriteXfer(xfer)) {
            set_err(err, errlen, "JPEG compression failed: %s%s", c.bad() ? c.text() : "no JPEG representation",
                    log.detail().c_str());
            return -1;
        }
    }

    if (!lpnx_dcm::save_file(file, path, xfer, log, err, errlen)) return -1;
    if (uids) *uids = u;
    return 0;
}

}  // namespace

/* ------------------------------------------------------------------ */
/* the C interface                                                     */
/* ------------------------------------------------------------------ */

extern "C" {

int lpnx_dicom_open(lpnx_dicom **out, const char *path, long long frame, char *err, size_t errlen) {
    if (!out) return -1;
    *out = nullptr;
    lpnx_dicom *d = nullptr;
    int rc = lpnx_dcm::guarded(dcmtk_init, path, err, errlen, [&] {
        d = new lpnx_dicom();
        d->info = lpnx_dicom_info{};
        if (open_file(d, path, frame, err, errlen) != 0) return -1;
        d->info.photometric = d->photometric.c_str();
        return 0;
    });
    if (rc != 0) {
        lpnx_dicom_close(d);
        return -1;
    }
    *out = d;
    return 0;
}

const lpnx_dicom_info *lpnx_dicom_info_of(const lpnx_dicom *d) { return d ? &d->info : nullptr; }

void lpnx_dicom_pixels(const lpnx_dicom *d, float *out) {
    if (!d || !out) return;
    try {
        pixels(d, out);
    } catch (...) {
    }
}

void lpnx_dicom_stored_pixels(lpnx_dicom *d, float *out) {
    if (!d || !out) return;
    /* pixels() without its MONOCHROME1 inversion and rescale */
    bool monochrome1 = d->monochrome1;
    double slope = d->slope, intercept = d->intercept;
    d->monochrome1 = false;
    d->slope = 1.0;
    d->intercept = 0.0;
    try {
        pixels(d, out);
    } catch (...) {
    }
    d->monochrome1 = monochrome1;
    d->slope = slope;
    d->intercept = intercept;
}

void lpnx_dicom_close(lpnx_dicom *d) {
    try {
        delete d;
    } catch (...) {
    }
}

int lpnx_dicom_write(const char *path, const void *pixels_in, int rows, int columns,
                     const lpnx_dicom_write_meta *meta, int jpeg, int quality, lpnx_dicom_uids *uids, char *err,
                     size_t errlen) {
    return lpnx_dcm::guarded(dcmtk_init, path, err, errlen, [&] {
        return write_file(path, pixels_in, rows, columns, meta, jpeg, quality, uids, err, errlen);
    });
}

}  // extern "C"
