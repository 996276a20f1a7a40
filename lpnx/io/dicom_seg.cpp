/* DICOM Segmentation objects through DCMTK's dcmseg, behind the plain C
 * interface of dicom_seg.h. Every entry point catches every exception and
 * every bad OFCondition and turns it into an error code plus a message,
 * so nothing C++ ever unwinds into C or Lua.
 *
 * Writing: DcmSegmentation::createBinarySegmentation with the equipment
 * and content identification, the source's patient, study and frame of
 * reference copied over attribute by attribute (each checked against its
 * VR first: a bad option or source UID is reported by name; a patient or
 * study value too long for its VR is cut at the VR's limit and any other
 * bad one left out, each with a warning, so that an archive's free-text
 * names never cost an image its segmentation), one segment
 * (DcmSegment::create), one frame with its Frame Content, Segment
 * Identification and Derivation Image functional groups, Pixel Measures
 * when the source has a Pixel Spacing, a dimension on the Referenced
 * Segment Number, and the source in the Common Instance Reference module.
 * The object is written into a data set and saved to a temp file that is
 * renamed over the target (file.h).
 *
 * Reading does not go through dcmseg: the data set is walked with dcmdata
 * (Segment Sequence, per-frame or shared Segment Identification, the
 * references, Pixel Measures) and the 1-bit or 8-bit frames are unpacked
 * here, so that a file written by any tool is read by the rules of PS3.3
 * C.8.20 and PS3.5 8.1.1 (1-bit pixels packed from the least significant
 * bit, frames contiguous without padding), and so that reading back what
 * dcmseg wrote is a check on it.
 *
 * DCMTK's error messages (else its warnings), captured while a call runs
 * (dcm_util.hpp), are added to lpnx's messages. */
#include "dicom_seg.h"
#include "dcm_util.hpp"

#include <dcmtk/config/osconfig.h>

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmfg/fgderimg.h>
#include <dcmtk/dcmfg/fgfracon.h>
#include <dcmtk/dcmfg/fgpixmsr.h>
#include <dcmtk/dcmfg/fgseg.h>
#include <dcmtk/dcmiod/cielabutil.h>
#include <dcmtk/dcmiod/iodreferences.h>
#include <dcmtk/dcmseg/segdoc.h>
#include <dcmtk/dcmseg/segment.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace lpnx_dcm; /* the shared parts of the DCMTK shims */

void cleanup_dcmtk() {
    try {
        DcmRLEDecoderRegistration::cleanup();
    } catch (...) {
    }
}

void register_codecs() {
    DcmRLEDecoderRegistration::registerCodecs(); /* a no-op when io/dicom.cpp did it */
    std::atexit(cleanup_dcmtk);
}

lpnx_dcm::Init dcmtk_init{register_codecs, "could not initialise DCMTK"};

/* ------------------------------------------------------------------ */
/* writing                                                             */
/* ------------------------------------------------------------------ */

/* Sets v on the component with setter when v is non-empty (setters check
 * nothing more: the values were checked before). */
template <class Setter> void set_if(Build &b, const char *v, const char *what, Setter setter) {
    if (b.failed || !v || !*v) return;
    b.ok(setter(OFString(v)), what);
}

int write_seg(const char *path, const unsigned char *mask, int rows, int columns, const lpnx_seg_source *given,
              const lpnx_seg_options *opt, lpnx_seg_uids *uids, std::string &warnings, char *err, size_t errlen) {
    LogScope log(true); /* messages end with DCMTK's errors, else its warnings */
    if (!mask || rows < 1 || columns < 1 || rows > 65535 || columns > 65535) {
        set_err(err, errlen, "mask size %d x %d is outside 1..65535", rows, columns);
        return -1;
    }
    if (!given) {
        set_err(err, errlen, "no source image attributes");
        return -1;
    }
    /* the source's attributes as they will be written: a copy whose
     * patient and study values may be shortened or left out below */
    SourceValues fixed(*given);
    const lpnx_seg_source *src = &fixed.src;
    if ((src->rows > 0 && src->rows != rows) || (src->columns > 0 && src->columns != columns)) {
        set_err(err, errlen, "the mask is %d x %d but the source image is %d x %d (rows x columns)", rows, columns,
                src->rows, src->columns);
        return -1;
    }
    lpnx_seg_options defaults;
    if (!opt) {
        lpnx_dicom_seg_defaults(&defaults);
        opt = &defaults;
    }

    /* every string, checked before anything is built */
    const Field source_fields[] = {
        {"sop_class_uid", src->sop_class_uid, VR_UI, true},
        {"sop_instance_uid", src->sop_instance_uid, VR_UI, true},
        {"study_instance_uid", src->study_instance_uid, VR_UI, true},
        {"series_instance_uid", src->series_instance_uid, VR_UI, true},
    };
    /* Patient, study and lossy history are copied as faithfully as their VR
     * allows (SourceValues::fit, below), so that a source with a free-text
     * name of 100 characters still gets its segmentation. */
    const Field option_fields[] = {
        {"label", opt->segment_label, VR_LO, true},
        {"description", opt->segment_description, VR_ST, false},
        {"category.code", opt->category.value, VR_SH, true},
        {"category.scheme", opt->category.scheme, VR_SH, true},
        {"category.meaning", opt->category.meaning, VR_LO, true},
        {"type.code", opt->type.value, VR_SH, true},
        {"type.scheme", opt->type.scheme, VR_SH, true},
        {"type.meaning", opt->type.meaning, VR_LO, true},
        {"algorithm_name", opt->algorithm_name, VR_LO, true},
        {"algorithm_version", opt->algorithm_version, VR_LO, true},
        {"manufacturer", opt->manufacturer, VR_LO, true},
        {"model_name", opt->model_name, VR_LO, true},
        {"device_serial_number", opt->device_serial_number, VR_LO, true},
        {"software_versions", opt->software_versions, VR_LO, true},
        {"series_description", opt->series_description, VR_LO, false},
        {"series_number", opt->series_number, VR_IS, true},
        {"instance_number", opt->instance_number, VR_IS, true},
        {"content_label", opt->content_label, VR_CS, true},
        {"content_description", opt->content_description, VR_LO, false},
        {"content_creator", opt->content_creator, VR_PN, false},
        {"series_instance_uid", opt->series_instance_uid, VR_UI, false},
        {"sop_instance_uid", opt->sop_instance_uid, VR_UI, false},
    };
    std::string charset;
    if (!check_fields(fixed, src->specific_character_set, source_fields, sizeof source_fields / sizeof *source_fields,
                      option_fields, sizeof option_fields / sizeof *option_fields, charset, err, errlen))
        return -1;
    fixed.fit(charset, warnings);
    if (src->has_pixel_spacing && !check_spacing("source_meta", src->pixel_spacing, err, errlen)) return -1;
    for (int k = 0; k < 3; k++) {
        if (!(opt->color[k] >= 0 && opt->color[k] <= 1)) {
            set_err(err, errlen, "opts.color[%d] must be in [0, 1], got %g", k + 1, opt->color[k]);
            return -1;
        }
    }

    /* the object */
    Build b{err, errlen, log};
    IODGeneralEquipmentModule::EquipmentInfo equipment(opt->manufacturer, opt->model_name, opt->device_serial_number,
                                                        opt->software_versions);
    ContentIdentificationMacro content(opt->instance_number, opt->content_label,
                                       opt->content_description ? opt->content_description : "",
                                       opt->content_creator ? opt->content_creator : "");
    DcmSegmentation *raw = nullptr;
    OFCondition c = DcmSegmentation::createBinarySegmentation(raw, (Uint16)rows, (Uint16)columns, equipment, content);
    std::unique_ptr<DcmSegmentation> seg(raw);
    if (!b.ok(c, "create the segmentation")) return -1;
    if (!seg) {
        set_err(err, errlen, "cannot create the segmentation%s", log.detail().c_str());
        return -1;
    }

    if (!charset.empty())
        b.ok(seg->getSOPCommon().setSpecificCharacterSet(charset.c_str(), OFFalse), "set the character set");
    IODPatientModule &patient = seg->getPatient();
    set_if(b, src->patient_name, "set the patient's name",
           [&](const OFString &v) { return patient.setPatientName(v, OFFalse); });
    set_if(b, src->patient_id, "set the patient id",
           [&](const OFString &v) { return patient.setPatientID(v, OFFalse); });
    set_if(b, src->patient_birth_date, "set the birth date",
           [&](const OFString &v) { return patient.setPatientBirthDate(v, OFFalse); });
    set_if(b, src->patient_sex, "set the patient's sex",
           [&](const OFString &v) { return patient.setPatientSex(v, OFFalse); });
    set_if(b, src->patient_age, "set the patient's age",
           [&](const OFString &v) { return seg->getPatientStudy().setPatientAge(v, OFFalse); });
    IODGeneralStudyModule &study = seg->getStudy();
    set_if(b, src->study_instance_uid, "set the study",
           [&](const OFString &v) { return study.setStudyInstanceUID(v, OFFalse); });
    set_if(b, src->study_date, "set the study date", [&](const OFString &v) { return study.setStudyDate(v, OFFalse); });
    set_if(b, src->study_time, "set the study time", [&](const OFString &v) { return study.setStudyTime(v, OFFalse); });
    set_if(b, src->study_id, "set the study id", [&](const OFString &v) { return study.setStudyID(v, OFFalse); });
    set_if(b, src->accession_number, "set the accession number",
           [&](const OFString &v) { return study.setAccessionNumber(v, OFFalse); });
    set_if(b, src->referring_physician_name, "set the referring physician",
           [&](const OFString &v) { return study.setReferringPhysicianName(v, OFFalse); });
    set_if(b, src->study_description, "set the study description",
           [&](const OFString &v) { return study.setStudyDescription(v, OFFalse); });
    /* DCMTK 3.6.7 wants a Frame of Reference always, and Plane Position and
     * Orientation (Patient) groups whenever there is one; a projection
     * image has neither plane. PS3.3 A.51 requires none of them once the
     * Derivation Image group is there, so DCMTK is told the module is
     * optional and the source's UID is added to the data set afterwards. */
    for (const DcmTagKey &tag : {DCM_FrameOfReferenceUID, DCM_PositionReferenceIndicator}) {
        IODRule *rule = seg->getRules() ? seg->getRules()->getByTag(tag) : nullptr;
        if (!rule || !rule->setType("3")) {
            set_err(err, errlen, "cannot make the Frame of Reference optional in DCMTK's rules");
            return -1;
        }
    }

    /* the series and the instance: given or new UIDs */
    char series_uid[65], instance_uid[65];
    if (opt->series_instance_uid && *opt->series_instance_uid)
        snprintf(series_uid, sizeof series_uid, "%s", opt->series_instance_uid);
    else
        dcmGenerateUniqueIdentifier(series_uid, SITE_SERIES_UID_ROOT);
    if (opt->sop_instance_uid && *opt->sop_instance_uid)
        snprintf(instance_uid, sizeof instance_uid, "%s", opt->sop_instance_uid);
    else
        dcmGenerateUniqueIdentifier(instance_uid, SITE_INSTANCE_UID_ROOT);
    IODGeneralSeriesModule &series = seg->getSeries();
    set_if(b, series_uid, "set the series", [&](const OFString &v) { return series.setSeriesInstanceUID(v, OFFalse); });
    set_if(b, opt->series_number, "set the series number",
           [&](const OFString &v) { return seg->getSegmentationSeriesModule().setSeriesNumber(v, OFFalse); });
    set_if(b, opt->series_description, "set the series description",
           [&](const OFString &v) { return series.setSeriesDescription(v, OFFalse); });
    set_if(b, instance_uid, "set the instance",
           [&](const OFString &v) { return seg->getSOPCommon().setSOPInstanceUID(v, OFFalse); });
    if (b.failed) return -1;

    /* the segment */
    CodeSequenceMacro category(opt->category.value, opt->category.scheme, opt->category.meaning);
    CodeSequenceMacro type(opt->type.value, opt->type.scheme, opt->type.meaning);
    DcmSegment *segment_raw = nullptr;
    c = DcmSegment::create(segment_raw, opt->segment_label, category, type, DcmSegTypes::SAT_AUTOMATIC,
                           opt->algorithm_name);
    std::unique_ptr<DcmSegment> segment(segment_raw);
    if (!b.ok(c, "create the segment")) return -1;
    if (!segment) {
        set_err(err, errlen, "cannot create the segment%s", log.detail().c_str());
        return -1;
    }
    set_if(b, opt->segment_description, "set the segment description",
           [&](const OFString &v) { return segment->setSegmentDescription(v, OFFalse); });
    double lab[3];
    IODCIELabUtil::rgb2DicomLab(lab[0], lab[1], lab[2], opt->color[0], opt->color[1], opt->color[2]);
    Uint16 lab16[3];
    for (int k = 0; k < 3; k++) lab16[k] = (Uint16)std::lround(lab[k] < 0 ? 0 : lab[k] > 65535 ? 65535 : lab[k]);
    b.ok(segment->setRecommendedDisplayCIELabValue(lab16[0], lab16[1], lab16[2]), "set the segment's colour");
    AlgorithmIdentificationMacro algorithm;
    b.ok(algorithm.getAlgorithmFamilyCode().set("123110", "DCM", "Artificial Intelligence"), "set the algorithm family");
    b.ok(algorithm.setAlgorithmName(opt->algorithm_name, OFFalse), "set the algorithm name");
    b.ok(algorithm.setAlgorithmVersion(opt->algorithm_version, OFFalse), "set the algorithm version");
    b.ok(segment->setSegmentationAlgorithmIdentification(algorithm, OFFalse), "set the algorithm identification");
    if (b.failed) return -1;
    Uint16 number = 0;
    c = seg->addSegment(segment.get(), number);
    if (!b.ok(c, "add the segment")) return -1;
    segment.release(); /* the segmentation owns it now */

    /* shared functional groups */
    bool has_frame_of_reference = src->frame_of_reference_uid && *src->frame_of_reference_uid;
    if (src->has_pixel_spacing && !has_frame_of_reference) {
        FGPixelMeasures measures;
        std::string ps = format_ds(src->pixel_spacing[0]) + "\\" + format_ds(src->pixel_spacing[1]);
        b.ok(measures.setPixelSpacing(ps.c_str(), OFFalse), "set the pixel spacing");
        b.ok(seg->addForAllFrames(measures), "add the pixel measures");
    }

    /* the frame and its functional groups */
    FGFrameContent frame_content;
    b.ok(frame_content.setDimensionIndexValues(1, 0), "set the dimension index");
    FGSegmentation identification;
    b.ok(identification.setReferencedSegmentNumber(number), "set the segment of the frame");
    ImageSOPInstanceReferenceMacro *source_ref = nullptr;
    c = ImageSOPInstanceReferenceMacro::create(src->sop_class_uid, src->sop_instance_uid, OFVector<Uint16>(),
                                               source_ref);
    std::unique_ptr<ImageSOPInstanceReferenceMacro> source_owner(source_ref);
    if (!b.ok(c, "reference the source image")) return -1;
    OFVector<ImageSOPInstanceReferenceMacro> derived_from;
    derived_from.push_back(*source_ref);
    std::unique_ptr<FGDerivationImage> derivation(FGDerivationImage::createMinimal(
        derived_from, "Pneumothorax segmentation by lpnx",
        CodeSequenceMacro("113076", "DCM", "Segmentation"),
        CodeSequenceMacro("121322", "DCM", "Source image for image processing operation")));
    if (!derivation) {
        set_err(err, errlen, "cannot make the Derivation Image functional group%s", log.detail().c_str());
        return -1;
    }
    if (b.failed) return -1;
    std::vector<Uint8> pixels((size_t)rows * (size_t)columns);
    for (size_t i = 0; i < pixels.size(); i++) pixels[i] = mask[i] ? 1 : 0;
    OFVector<FGBase *> per_frame;
    per_frame.push_back(&frame_content);
    per_frame.push_back(&identification);
    per_frame.push_back(derivation.get());
    if (!b.ok(seg->addFrame(pixels.data(), number, per_frame), "add the frame")) return -1;

    /* one dimension: the segment */
    char organization[65];
    dcmGenerateUniqueIdentifier(organization, SITE_UID_ROOT);
    IODMultiframeDimensionModule &dims = seg->getDimensions();
    if (!b.ok(dims.addDimensionIndex(DCM_ReferencedSegmentNumber, organization, DCM_SegmentIdentificationSequence,
                                     "ReferencedSegmentNumber"),
              "add the dimension"))
        return -1;
    std::unique_ptr<IODMultiframeDimensionModule::DimensionOrganizationItem> org(
        new IODMultiframeDimensionModule::DimensionOrganizationItem());
    if (!b.ok(org->setDimensionOrganizationUID(organization, OFFalse), "set the dimension organization")) return -1;
    dims.getDimensionOrganizationSequence().push_back(org.release());

    /* the source in the Common Instance Reference module */
    IODReferences references;
    IODImageReference *ref = new IODImageReference(src->patient_id ? src->patient_id : "", src->study_instance_uid,
                                                   src->series_instance_uid, src->sop_instance_uid, src->sop_class_uid);
    if (!references.add(ref)) {
        delete ref;
        set_err(err, errlen, "cannot reference the source image (incomplete UIDs)%s", log.detail().c_str());
        return -1;
    }
    if (seg->getCommonInstanceReference().addReferences(references, src->study_instance_uid) != 1) {
        set_err(err, errlen, "cannot reference the source image's series%s", log.detail().c_str());
        return -1;
    }

    /* the data set and the file */
    DcmFileFormat file;
    DcmDataset *ds = file.getDataset();
    if (!b.ok(seg->writeDataset(*ds), "build the data set")) return -1;
    /* What DCMTK 3.6.7 leaves out or gets wrong for a projection image: the
     * Frame of Reference (above), Patient Orientation (Type 2C: required when
     * there is no Plane Orientation), and the lossy compression history of
     * the source, which a derived image inherits (PS3.3 C.7.6.1.1.5);
     * setLossyImageCompressionFlag() keeps the ratio and method but writes
     * "00". */
    if (has_frame_of_reference) {
        b.ok(ds->putAndInsertString(DCM_FrameOfReferenceUID, src->frame_of_reference_uid),
             "set the frame of reference");
        b.ok(ds->putAndInsertString(DCM_PositionReferenceIndicator, ""), "set the position reference indicator");
    }
    if (!ds->tagExists(DCM_PatientOrientation))
        b.ok(ds->putAndInsertString(DCM_PatientOrientation, src->patient_orientation ? src->patient_orientation : ""),
             "set the patient orientation");
    if (src->lossy_image_compression && strcmp(src->lossy_image_compression, "01") == 0) {
        b.ok(ds->putAndInsertString(DCM_LossyImageCompression, "01"), "set the lossy compression flag");
        const char *ratio = src->lossy_image_compression_ratio, *method = src->lossy_image_compression_method;
        if (ratio && *ratio)
            b.ok(ds->putAndInsertString(DCM_LossyImageCompressionRatio, ratio), "set the compression ratio");
        if (method && *method)
            b.ok(ds->putAndInsertString(DCM_LossyImageCompressionMethod, method), "set the compression method");
    }
    if (b.failed) return -1;

    lpnx_seg_uids u{};
    OFString v;
    auto copy_uid = [&](const DcmTagKey &tag, char *out) {
        out[0] = '\0';
        if (ds->findAndGetOFString(tag, v).good()) snprintf(out, 65, "%s", v.c_str());
    };
    copy_uid(DCM_SOPClassUID, u.sop_class_uid);
    copy_uid(DCM_SOPInstanceUID, u.sop_instance_uid);
    copy_uid(DCM_StudyInstanceUID, u.study_instance_uid);
    copy_uid(DCM_SeriesInstanceUID, u.series_instance_uid);
    copy_uid(DCM_FrameOfReferenceUID, u.frame_of_reference_uid);

    if (!lpnx_dcm::save_file(file, path, EXS_LittleEndianExplicit, log, err, errlen)) return -1;
    if (uids) *uids = u;
    return 0;
}

}  // namespace

/* ------------------------------------------------------------------ */
/* reading                                                             */
/* ------------------------------------------------------------------ */

namespace {

const char *const info_keys[LPNX_SEG_NSTRINGS] = {
    "sop_class_uid",      "sop_instance_uid", "study_instance_uid", "series_instance_uid",
    "frame_of_reference_uid", "patient_id",   "patient_name",       "patient_sex",
    "patient_birth_date", "study_date",       "modality",           "series_description",
    "series_number",      "content_label",    "content_description", "manufacturer",
    "segmentation_type"};

const DcmTagKey info_tags[LPNX_SEG_NSTRINGS] = {
    DCM_SOPClassUID,      DCM_SOPInstanceUID, DCM_StudyInstanceUID, DCM_SeriesInstanceUID,
    DCM_FrameOfReferenceUID, DCM_PatientID,   DCM_PatientName,      DCM_PatientSex,
    DCM_PatientBirthDate, DCM_StudyDate,      DCM_Modality,         DCM_SeriesDescription,
    DCM_SeriesNumber,     DCM_ContentLabel,   DCM_ContentDescription, DCM_Manufacturer,
    DCM_SegmentationType};

}  // namespace

/* Strings of a segment and of a reference live in std::string members;
 * the info's pointers are set once everything is parsed (no reallocation
 * after that). */
struct SegmentStrings {
    std::string label, description, algorithm_type, algorithm_name;
    std::string category[3], type[3];
};
struct ReferenceStrings {
    std::string sop_class_uid, sop_instance_uid, series_instance_uid;
};

struct lpnx_seg {
    lpnx_seg_info info{};
    DcmFileFormat file;
    std::string strings[LPNX_SEG_NSTRINGS];
    std::vector<SegmentStrings> segment_strings;
    std::vector<lpnx_seg_segment> segments;
    std::vector<ReferenceStrings> reference_strings;
    std::vector<lpnx_seg_reference> references;
    std::vector<int> frame_segment;  /* (frames) segment number of each frame */
    std::vector<Uint8> bytes;        /* the pixel data as stored, little-endian byte order */
    int bits_allocated = 1;
};

namespace {

/* Item i of the sequence tag in item, or nullptr. */
DcmItem *sequence_item(DcmItem *item, const DcmTagKey &tag, unsigned long i) {
    DcmSequenceOfItems *seq = nullptr;
    if (!item || item->findAndGetSequence(tag, seq).bad() || !seq || i >= seq->card()) return nullptr;
    return seq->getItem(i);
}

/* The items of the sequence tag in item, in order (empty when there is
 * none), found in one walk of the list: getItem(i) walks it from its head
 * every time, so indexing item by item would take quadratic time on a file
 * with many items. Anything not an item is kept as nullptr. */
std::vector<DcmItem *> sequence_items(DcmItem *item, const DcmTagKey &tag) {
    std::vector<DcmItem *> items;
    DcmSequenceOfItems *seq = nullptr;
    if (!item || item->findAndGetSequence(tag, seq).bad() || !seq) return items;
    items.reserve(seq->card());
    for (DcmObject *o = seq->nextInContainer(nullptr); o; o = seq->nextInContainer(o))
        items.push_back(dynamic_cast<DcmItem *>(o));
    return items;
}

void read_code(DcmItem *item, const DcmTagKey &tag, std::string out[3]) {
    DcmItem *code = sequence_item(item, tag, 0);
    out[0] = get_string(code, DCM_CodeValue);
    if (out[0].empty()) out[0] = get_string(code, DCM_LongCodeValue);
    if (out[0].empty()) out[0] = get_string(code, DCM_URNCodeValue);
    out[1] = get_string(code, DCM_CodingSchemeDesignator);
    out[2] = get_string(code, DCM_CodeMeaning);
}

/* The Referenced Segment Number of a functional groups item, or 0. */
int segment_of(DcmItem *groups) {
    DcmItem *id = sequence_item(groups, DCM_SegmentIdentificationSequence, 0);
    Uint16 n = 0;
    if (!id || id->findAndGetUint16(DCM_ReferencedSegmentNumber, n).bad()) return 0;
    return n;
}

const char *cstr(const std::string &s) { return s.empty() ? nullptr : s.c_str(); }

int open_seg(lpnx_seg *s, const char *path, char *err, size_t errlen) {
    LogScope log(true); /* messages end with DCMTK's errors, else its warnings */
    if (!lpnx_dcm::check_path(path, err, errlen) || !lpnx_dcm::load_file(s->file, path, log, err, errlen)) return -1;
    OFCondition cond;
    DcmDataset *ds = s->file.getDataset();
    lpnx_seg_info &info = s->info;
    for (int i = 0; i < LPNX_SEG_NSTRINGS; i++) s->strings[i] = get_string(ds, info_tags[i]);
    const std::string &sop_class = s->strings[0];
    if (sop_class != UID_SegmentationStorage) {
        set_err(err, errlen, "not a Segmentation (SOP class %s)", sop_class.empty() ? "missing" : sop_class.c_str());
        return -1;
    }
    const std::string &type = s->strings[LPNX_SEG_NSTRINGS - 1];
    if (type != "BINARY" && type != "FRACTIONAL") {
        set_err(err, errlen, "SegmentationType '%s' is not supported (BINARY or FRACTIONAL)", type.c_str());
        return -1;
    }
    info.fractional = type == "FRACTIONAL";

    /* image attributes */
    Uint16 rows = 0, columns = 0, ba = 0, bs = 0, samples = 1;
    if (ds->findAndGetUint16(DCM_Rows, rows).bad() || ds->findAndGetUint16(DCM_Columns, columns).bad() || rows == 0 ||
        columns == 0) {
        set_err(err, errlen, "no image size (Rows %u, Columns %u)", (unsigned)rows, (unsigned)columns);
        return -1;
    }
    ds->findAndGetUint16(DCM_SamplesPerPixel, samples);
    if (ds->findAndGetUint16(DCM_BitsAllocated, ba).bad()) {
        set_err(err, errlen, "no BitsAllocated attribute");
        return -1;
    }
    if (ds->findAndGetUint16(DCM_BitsStored, bs).bad()) bs = ba;
    if (samples != 1 || (info.fractional ? (ba != 8 || bs != 8) : (ba != 1 || bs != 1))) {
        set_err(err, errlen, "%s segmentation with %u samples per pixel, BitsAllocated %u and BitsStored %u "
                             "(expected 1 sample of %d bits)",
                type.c_str(), (unsigned)samples, (unsigned)ba, (unsigned)bs, info.fractional ? 8 : 1);
        return -1;
    }
    double frames_d = 1;
    if (ds->tagExistsWithValue(DCM_NumberOfFrames) &&
        (!get_number(ds, DCM_NumberOfFrames, 0, &frames_d) || frames_d != std::floor(frames_d) || frames_d < 1 ||
         frames_d > 2147483647.0)) {
        set_err(err, errlen, "NumberOfFrames is not a positive integer");
        return -1;
    }
    double values = (double)rows * columns * frames_d;
    if (values > 2147483647.0) {
        set_err(err, errlen, "segmentation too large (%u rows x %u columns x %.0f frames)", (unsigned)rows,
                (unsigned)columns, frames_d);
        return -1;
    }
    info.rows = rows;
    info.columns = columns;
    info.number_of_frames = (int)frames_d;
    info.max_fractional_value = 1;
    if (info.fractional) {
        Uint16 max = 0;
        if (ds->findAndGetUint16(DCM_MaximumFractionalValue, max).bad() || max == 0) {
            set_err(err, errlen, "FRACTIONAL segmentation without a MaximumFractionalValue");
            return -1;
        }
        info.max_fractional_value = max;
    }
    s->bits_allocated = ba;

    /* segments */
    std::vector<DcmItem *> segment_items = sequence_items(ds, DCM_SegmentSequence);
    unsigned long nseg = segment_items.size();
    if (nseg == 0) {
        set_err(err, errlen, "no SegmentSequence");
        return -1;
    }
    s->segment_strings.resize(nseg);
    s->segments.resize(nseg);
    std::map<int, size_t> by_number;
    for (unsigned long i = 0; i < nseg; i++) {
        DcmItem *item = segment_items[i];
        Uint16 n = 0;
        if (!item || item->findAndGetUint16(DCM_SegmentNumber, n).bad() || n == 0) {
            set_err(err, errlen, "item %lu of the SegmentSequence has no SegmentNumber", i + 1);
            return -1;
        }
        if (by_number.count(n)) {
            set_err(err, errlen, "SegmentNumber %u appears twice", (unsigned)n);
            return -1;
        }
        by_number[n] = i;
        SegmentStrings &ss = s->segment_strings[i];
        ss.label = get_string(item, DCM_SegmentLabel);
        ss.description = get_string(item, DCM_SegmentDescription);
        ss.algorithm_type = get_string(item, DCM_SegmentAlgorithmType);
        ss.algorithm_name = get_string(item, DCM_SegmentAlgorithmName);
        read_code(item, DCM_SegmentedPropertyCategoryCodeSequence, ss.category);
        read_code(item, DCM_SegmentedPropertyTypeCodeSequence, ss.type);
        lpnx_seg_segment &seg = s->segments[i];
        seg = lpnx_seg_segment{};
        seg.number = n;
        Uint16 lab[3];
        if (item->findAndGetUint16(DCM_RecommendedDisplayCIELabValue, lab[0], 0).good() &&
            item->findAndGetUint16(DCM_RecommendedDisplayCIELabValue, lab[1], 1).good() &&
            item->findAndGetUint16(DCM_RecommendedDisplayCIELabValue, lab[2], 2).good()) {
            double r, g, bl;
            IODCIELabUtil::dicomLab2RGB(r, g, bl, lab[0], lab[1], lab[2]);
            auto unit = [](double v) { return v < 0 ? 0.0 : v > 1 ? 1.0 : v; };
            seg.has_color = 1;
            seg.color[0] = unit(r);
            seg.color[1] = unit(g);
            seg.color[2] = unit(bl);
        }
    }

    /* pixel data: decoded when encapsulated, then as little-endian bytes; checked
     * before anything is allocated per frame, so that NumberOfFrames can claim no
     * more frames than the file holds bits for */
    E_TransferSyntax xfer = ds->getOriginalXfer();
    if (xfer == EXS_Unknown) {
        set_err(err, errlen, "unknown transfer syntax");
        return -1;
    }
    if (DcmXfer(xfer).isEncapsulated()) {
        std::string short_rle = rle_capacity_problem(ds, xfer, info.fractional ? values : values / 8);
        if (!short_rle.empty()) {
            set_err(err, errlen, "corrupt %s pixel data (%s)", DcmXfer(xfer).getXferName(), short_rle.c_str());
            return -1;
        }
        cond = ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
        if (cond.bad() || !ds->canWriteXfer(EXS_LittleEndianExplicit)) {
            set_err(err, errlen, "cannot decode the %s pixel data: %s%s", DcmXfer(xfer).getXferName(),
                    cond.bad() ? cond.text() : "no decoder", log.detail().c_str());
            return -1;
        }
    }
    DcmElement *pixel = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, pixel).bad() || !pixel) {
        set_err(err, errlen, "no PixelData element");
        return -1;
    }
    size_t have = pixel->getLength();
    if (pixel->getVR() == EVR_OW) {
        Uint16 *w = nullptr;
        cond = pixel->getUint16Array(w);
        if (cond.good() && w) {
            s->bytes.resize(have / 2 * 2);
            for (size_t i = 0; i + 1 < have; i += 2) {
                s->bytes[i] = (Uint8)(w[i / 2] & 0xFF);
                s->bytes[i + 1] = (Uint8)(w[i / 2] >> 8);
            }
        }
    } else {
        Uint8 *p = nullptr;
        cond = pixel->getUint8Array(p);
        if (cond.good() && p) s->bytes.assign(p, p + have);
    }
    if (cond.bad()) {
        set_err(err, errlen, "cannot read PixelData: %s%s", cond.text(), log.detail().c_str());
        return -1;
    }
    double need_bits = values * (info.fractional ? 8.0 : 1.0);
    double need = std::ceil(need_bits / 8.0);
    if ((double)s->bytes.size() < need) {
        set_err(err, errlen, "PixelData holds %zu bytes, expected %.0f (%u rows x %u columns x %d frame%s at %d bit%s)",
                s->bytes.size(), need, (unsigned)rows, (unsigned)columns, info.number_of_frames,
                info.number_of_frames == 1 ? "" : "s", info.fractional ? 8 : 1, info.fractional ? "s" : "");
        return -1;
    }
    s->file.getDataset()->findAndDeleteElement(DCM_PixelData); /* the copy above is all that is needed */

    /* the segment of each frame: per-frame Segment Identification, else shared */
    DcmItem *shared = sequence_item(ds, DCM_SharedFunctionalGroupsSequence, 0);
    int shared_segment = segment_of(shared);
    std::vector<DcmItem *> per_frame = sequence_items(ds, DCM_PerFrameFunctionalGroupsSequence);
    unsigned long nper = per_frame.size();
    if (nper != 0 && nper != (unsigned long)info.number_of_frames) {
        set_err(err, errlen, "PerFrameFunctionalGroupsSequence has %lu items for %d frames", nper,
                info.number_of_frames);
        return -1;
    }
    s->frame_segment.resize((size_t)info.number_of_frames);
    for (int f = 0; f < info.number_of_frames; f++) {
        int n = nper ? segment_of(per_frame[(size_t)f]) : 0;
        if (n == 0) n = shared_segment;
        if (n == 0) {
            set_err(err, errlen, "frame %d has no Segment Identification", f + 1);
            return -1;
        }
        auto it = by_number.find(n);
        if (it == by_number.end()) {
            set_err(err, errlen, "frame %d refers to segment %d, which the SegmentSequence does not have", f + 1, n);
            return -1;
        }
        s->frame_segment[(size_t)f] = n;
        s->segments[it->second].frames++;
    }

    /* pixel measures (shared, else the first frame's) */
    DcmItem *measures = sequence_item(shared, DCM_PixelMeasuresSequence, 0);
    if (!measures && nper) measures = sequence_item(per_frame[0], DCM_PixelMeasuresSequence, 0);
    info.has_pixel_spacing = get_number(measures, DCM_PixelSpacing, 0, &info.pixel_spacing[0]) &&
                             get_number(measures, DCM_PixelSpacing, 1, &info.pixel_spacing[1]);

    /* references: the Common Instance Reference module, then the derivation sources */
    std::map<std::string, size_t> seen;
    auto add_reference = [&](const std::string &cls, const std::string &inst, const std::string &series) {
        if (inst.empty()) return;
        auto it = seen.find(inst);
        if (it != seen.end()) {
            ReferenceStrings &r = s->reference_strings[it->second];
            if (r.series_instance_uid.empty()) r.series_instance_uid = series;
            if (r.sop_class_uid.empty()) r.sop_class_uid = cls;
            return;
        }
        seen[inst] = s->reference_strings.size();
        s->reference_strings.push_back(ReferenceStrings{cls, inst, series});
    };
    for (DcmItem *series : sequence_items(ds, DCM_ReferencedSeriesSequence)) {
        std::string series_uid = get_string(series, DCM_SeriesInstanceUID);
        for (DcmItem *inst : sequence_items(series, DCM_ReferencedInstanceSequence)) {
            add_reference(get_string(inst, DCM_ReferencedSOPClassUID), get_string(inst, DCM_ReferencedSOPInstanceUID),
                          series_uid);
        }
    }
    auto add_derivation = [&](DcmItem *groups) {
        for (DcmItem *der : sequence_items(groups, DCM_DerivationImageSequence)) {
            for (DcmItem *img : sequence_items(der, DCM_SourceImageSequence)) {
                add_reference(get_string(img, DCM_ReferencedSOPClassUID),
                              get_string(img, DCM_ReferencedSOPInstanceUID), std::string());
            }
        }
    };
    add_derivation(shared);
    for (DcmItem *groups : per_frame) add_derivation(groups);

    /* the info's pointers */
    for (int i = 0; i < LPNX_SEG_NSTRINGS; i++) {
        info.strings[i].key = info_keys[i];
        info.strings[i].value = cstr(s->strings[i]);
    }
    for (size_t i = 0; i < s->segments.size(); i++) {
        SegmentStrings &ss = s->segment_strings[i];
        lpnx_seg_segment &seg = s->segments[i];
        seg.label = cstr(ss.label);
        seg.description = cstr(ss.description);
        seg.algorithm_type = cstr(ss.algorithm_type);
        seg.algorithm_name = cstr(ss.algorithm_name);
        seg.category = lpnx_seg_code{cstr(ss.category[0]), cstr(ss.category[1]), cstr(ss.category[2])};
        seg.type = lpnx_seg_code{cstr(ss.type[0]), cstr(ss.type[1]), cstr(ss.type[2])};
    }
    s->references.resize(s->reference_strings.size());
    for (size_t i = 0; i < s->references.size(); i++) {
        ReferenceStrings &r = s->reference_strings[i];
        s->references[i] = lpnx_seg_reference{cstr(r.sop_class_uid), cstr(r.sop_instance_uid),
                                              cstr(r.series_instance_uid)};
    }
    info.nsegments = (int)s->segments.size();
    info.segments = s->segments.data();
    info.nreferences = (int)s->references.size();
    info.references = s->references.empty() ? nullptr : s->references.data();
    return 0;
}

void unpack(const lpnx_seg *s, int number, float *out) {
    const lpnx_seg_info &info = s->info;
    size_t hw = (size_t)info.rows * (size_t)info.columns;
    const Uint8 *b = s->bytes.data();
    float scale = 1.0f / (float)info.max_fractional_value;
    size_t k = 0;
    for (size_t f = 0; f < s->frame_segment.size(); f++) {
        if (s->frame_segment[f] != number) continue;
        float *o = out + k * hw;
        size_t base = f * hw;
        if (info.fractional) {
            for (size_t i = 0; i < hw; i++) o[i] = (float)b[base + i] * scale;
        } else {
            for (size_t i = 0; i < hw; i++) {
                size_t bit = base + i;
                o[i] = (float)((b[bit >> 3] >> (bit & 7)) & 1u);
            }
        }
        k++;
    }
}

}  // namespace

/* ------------------------------------------------------------------ */
/* the C interface                                                     */
/* ------------------------------------------------------------------ */

extern "C" {

void lpnx_dicom_seg_defaults(lpnx_seg_options *opt) {
    if (!opt) return;
    *opt = lpnx_seg_options{};
    opt->segment_label = "Pneumothorax";
    opt->segment_description = "Pneumothorax predicted by lpnx";
    opt->category = lpnx_seg_code{"49755003", "SCT", "Morphologically Altered Structure"};
    opt->type = lpnx_seg_code{"36118008", "SCT", "Pneumothorax"};
    opt->algorithm_name = "lpnx";
    opt->algorithm_version = "unknown";
    opt->color[0] = 1;
    opt->color[1] = 0;
    opt->color[2] = 0;
    opt->manufacturer = "lpnx";
    opt->model_name = "lpnx";
    opt->device_serial_number = "1";
    opt->software_versions = "unknown";
    opt->series_description = "Pneumothorax segmentation (lpnx)";
    opt->series_number = "1000";
    opt->instance_number = "1";
    opt->content_label = "PNEUMOTHORAX";
    opt->content_description = "Pneumothorax segmentation";
}

int lpnx_dicom_seg_write(const char *path, const unsigned char *mask, int rows, int columns,
                         const lpnx_seg_source *src, const lpnx_seg_options *opt, lpnx_seg_uids *uids,
                         char *warnings, size_t warnlen, char *err, size_t errlen) {
    if (warnings && warnlen) warnings[0] = '\0';
    return lpnx_dcm::guarded(dcmtk_init, path, err, errlen, [&] {
        std::string w;
        int rc = write_seg(path, mask, rows, columns, src, opt, uids, w, err, errlen);
        if (rc == 0 && warnings && warnlen) snprintf(warnings, warnlen, "%s", w.c_str());
        return rc;
    });
}

int lpnx_dicom_seg_open(lpnx_seg **out, const char *path, char *err, size_t errlen) {
    if (!out) return -1;
    *out = nullptr;
    lpnx_seg *s = nullptr;
    int rc = lpnx_dcm::guarded(dcmtk_init, path, err, errlen, [&] {
        s = new lpnx_seg();
        return open_seg(s, path, err, errlen);
    });
    if (rc != 0) {
        lpnx_dicom_seg_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

const lpnx_seg_info *lpnx_dicom_seg_info_of(const lpnx_seg *s) { return s ? &s->info : nullptr; }

int lpnx_dicom_seg_frames(const lpnx_seg *s, int number) {
    if (!s) return 0;
    for (const lpnx_seg_segment &seg : s->segments)
        if (seg.number == number) return seg.frames;
    return 0;
}

void lpnx_dicom_seg_mask(const lpnx_seg *s, int number, float *out) {
    if (!s || !out) return;
    try {
        unpack(s, number, out);
    } catch (...) {
    }
}

void lpnx_dicom_seg_close(lpnx_seg *s) {
    try {
        delete s;
    } catch (...) {
    }
}

}  // extern "C"
