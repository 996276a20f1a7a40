/* DICOM Structured Reports through DCMTK's dcmsr, behind the plain C
 * interface of dicom_sr.h. Every entry point catches every exception and
 * every bad OFCondition and turns it into an error code plus a message,
 * so nothing C++ ever unwinds into C or Lua.
 *
 * The report is built with DSRDocument's tree API (which checks each
 * relationship against the Comprehensive SR IOD's constraints as it is
 * added), in the form of TID 1500 "Measurement Report":
 *
 *   CONTAINER Imaging Measurement Report (TID 1500)
 *     HAS CONCEPT MOD  Language of Content Item and Descendants = en-US    (TID 1204)
 *     HAS OBS CONTEXT  Observer Type = Device, Device Observer UID, Name,
 *                      Manufacturer, Model Name                            (TID 1002, 1004)
 *     HAS CONCEPT MOD  Procedure reported = Plain chest X-ray
 *     CONTAINS CONTAINER Image Library > Image Library Group > IMAGE source (TID 1600)
 *     CONTAINS CONTAINER Imaging Measurements
 *       CONTAINS CONTAINER Measurement Group                               (TID 1410 / 1501)
 *         Tracking Identifier, Tracking Unique Identifier, Finding = Pneumothorax,
 *         IMAGE Referenced Segmentation Frame (the SEG, frame 1) and UIDREF
 *         Source series for segmentation, when a SEG is given,
 *         IMAGE Source of Measurement (the source image),
 *         CODE Presence of property = Present | Absent,
 *         NUM Certainty of Finding (ratio), NUM Area (cm2) when known,
 *         each NUM with its Algorithm Name and Version (TID 4019)
 *
 * The source's patient and study values are copied as a segmentation
 * copies them (dcm_util.hpp, SourceValues): checked against their VR, cut
 * or left out with a warning. They, and given series and instance UIDs,
 * are put into the data set DSRDocument writes (it has no setter for the
 * patient's age or for given UIDs). The Current Requested Procedure
 * Evidence lists the source image and the segmentation. The file is saved
 * to a temp file renamed over the target (file.h). */
#include "dicom_sr.h"
#include "dcm_util.hpp"
#include "uid.h"

#include <dcmtk/config/osconfig.h>

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmsr/codes/dcm.h>
#include <dcmtk/dcmsr/dsrdoc.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

namespace {

using namespace lpnx_dcm; /* the shared parts of the DCMTK shims */

void no_codecs() {}

lpnx_dcm::Init dcmtk_init{no_codecs, "could not initialise DCMTK"};

/* ------------------------------------------------------------------ */
/* codes                                                               */
/* ------------------------------------------------------------------ */

/* Codes that DCMTK 3.6.7's code headers lack, with where they come from.
 * The DCM codes the report uses come from dcmsr/codes/dcm.h (PS3.16 Annex
 * D). DICOM has no "Probability of finding"; the probability is DCM 111012
 * "Certainty of Finding", the CAD templates' concept for how likely a
 * finding is (DCM 122157 "Probability" belongs to the ECG codes), given
 * as a ratio in [0, 1]. */

/* SNOMED CT 36118008 |Pneumothorax (disorder)|, the segmentation's
 * Segmented Property Type too (dicom_seg.cpp). */
const DSRCodedEntryValue PNEUMOTHORAX("36118008", "SCT", "Pneumothorax");
/* SNOMED CT 52101004 |Present (qualifier value)| and 2667000 |Absent
 * (qualifier value)|, which replace DCM 121053 "Present" and 121054
 * "Absent" (retired: dcmsr/codes/dcm.h marks them so). */
const DSRCodedEntryValue PRESENT("52101004", "SCT", "Present");
const DSRCodedEntryValue ABSENT("2667000", "SCT", "Absent");
/* SNOMED CT 399208008 |Plain chest X-ray (procedure)|: TID 1500's Procedure
 * reported takes CID 100 "Quantitative Diagnostic Imaging Procedures",
 * which is extensible and lists no radiograph. */
const DSRCodedEntryValue CHEST_X_RAY("399208008", "SCT", "Plain chest X-ray");
/* SNOMED CT 42798000 |Area (property)|, as in CID 7469 "Generic Intensity
 * and Size Measurements" (dcmsr/cmr/cid7469.h). */
const DSRCodedEntryValue AREA("42798000", "SCT", "Area");
/* UCUM units as PS3.16 writes them: cm2 "square centimeter" (CID 7461 via
 * CID 7181) and {ratio} "ratio" (CID 7181, dcmsr/cmr/cid7181.h). */
const DSRCodedEntryValue SQUARE_CENTIMETER("cm2", "UCUM", "square centimeter");
const DSRCodedEntryValue RATIO("{ratio}", "UCUM", "ratio");
/* RFC 5646 language tag of the content (TID 1204). */
const DSRCodedEntryValue ENGLISH_US("en-US", "RFC5646", "English (United States)");

/* ------------------------------------------------------------------ */
/* writing                                                             */
/* ------------------------------------------------------------------ */


/* The tree being built: each add checks the cursor and the condition and
 * records the first failure with its message. */
struct Tree : Build {
    DSRDocumentTree &tree;

    Tree(DSRDocumentTree &tree_, char *err_, size_t errlen_, LogScope &log_)
        : Build(err_, errlen_, log_), tree(tree_) {}

    /* Adds an item after the current one (below it when child), sets its
     * concept name unless it is empty, and moves the cursor to it. */
    bool add(DSRTypes::E_RelationshipType rel, DSRTypes::E_ValueType type, const DSRCodedEntryValue &name,
             bool child, const char *what) {
        if (failed) return false;
        DSRTypes::E_AddMode mode = child ? DSRTypes::AM_belowCurrent : DSRTypes::AM_afterCurrent;
        if (tree.addContentItem(rel, type, mode) == 0) {
            set_err(err, errlen, "cannot add %s to the report%s", what, log.detail().c_str());
            failed = true;
            return false;
        }
        return name.isEmpty() || ok(tree.getCurrentContentItem().setConceptName(name, OFFalse), what);
    }

    void code(DSRTypes::E_RelationshipType rel, const DSRCodedEntryValue &name, const DSRCodedEntryValue &value,
              bool child, const char *what) {
        if (add(rel, DSRTypes::VT_Code, name, child, what))
            ok(tree.getCurrentContentItem().setCodeValue(value, OFFalse), what);
    }

    void text(DSRTypes::E_RelationshipType rel, DSRTypes::E_ValueType type, const DSRCodedEntryValue &name,
              const std::string &value, bool child, const char *what) {
        if (add(rel, type, name, child, what))
            ok(tree.getCurrentContentItem().setStringValue(value.c_str(), OFFalse), what);
    }

    void image(const DSRCodedEntryValue &name, const DSRImageReferenceValue &ref, bool child, const char *what) {
        if (add(DSRTypes::RT_contains, DSRTypes::VT_Image, name, child, what))
            ok(tree.getCurrentContentItem().setImageReference(ref, OFFalse), what);
    }

    /* A NUM with its unit, then the algorithm that made it (TID 4019) and
     * a comment when note is not empty below it. */
    void number(const DSRCodedEntryValue &name, double v, const DSRCodedEntryValue &unit, const lpnx_sr_options *opt,
                const std::string &note, bool child, const char *what) {
        std::string value = v == 0 ? std::string("0") : format_ds(v);
        if (!add(DSRTypes::RT_contains, DSRTypes::VT_Num, name, child, what)) return;
        if (!ok(tree.getCurrentContentItem().setNumericValue(DSRNumericMeasurementValue(value.c_str(), unit), OFFalse),
                what))
            return;
        text(DSRTypes::RT_hasConceptMod, DSRTypes::VT_Text, CODE_DCM_AlgorithmName, opt->algorithm_name, true,
             "the algorithm's name");
        text(DSRTypes::RT_hasConceptMod, DSRTypes::VT_Text, CODE_DCM_AlgorithmVersion, opt->algorithm_version, false,
             "the algorithm's version");
        if (!note.empty()) text(DSRTypes::RT_hasProperties, DSRTypes::VT_Text, CODE_DCM_Comment, note, false, what);
        if (!failed) tree.goUp();
    }
};

/* A UID derived from strings (uid.h). */
std::string derived(std::initializer_list<const char *> parts) {
    const char *p[8];
    size_t lens[8], n = 0;
    for (const char *s : parts) {
        if (n == 8) break;
        p[n] = s ? s : "";
        lens[n] = strlen(p[n]);
        n++;
    }
    char uid[LPNX_UID_MAX];
    lpnx_derive_uid(uid, p, lens, n);
    return uid;
}

int write_sr(const char *path, const lpnx_seg_source *given, const lpnx_sr_options *opt, lpnx_dicom_uids *uids,
             std::string &warnings, char *err, size_t errlen) {
    LogScope log(true); /* messages end with DCMTK's errors, else its warnings */
    if (!given) {
        set_err(err, errlen, "no source image attributes");
        return -1;
    }
    if (!opt) {
        set_err(err, errlen, "no report options");
        return -1;
    }
    /* a report has no pixels: only the patient and study are copied */
    lpnx_seg_source patient_study = *given;
    patient_study.frame_of_reference_uid = nullptr;
    patient_study.patient_orientation = nullptr;
    patient_study.lossy_image_compression = nullptr;
    patient_study.lossy_image_compression_ratio = nullptr;
    patient_study.lossy_image_compression_method = nullptr;
    SourceValues fixed(patient_study);
    const lpnx_seg_source *src = &fixed.src;

    const char *series_number = opt->series_number ? opt->series_number : "1001";
    const char *instance_number = opt->instance_number ? opt->instance_number : "1";
    const char *series_description =
        opt->series_description ? opt->series_description : "Pneumothorax report (lpnx)";
    const char *manufacturer = opt->manufacturer ? opt->manufacturer : "lpnx";
    const Field source_fields[] = {
        {"sop_class_uid", src->sop_class_uid, VR_UI, true},
        {"sop_instance_uid", src->sop_instance_uid, VR_UI, true},
        {"study_instance_uid", src->study_instance_uid, VR_UI, true},
        {"series_instance_uid", src->series_instance_uid, VR_UI, true},
    };
    const Field option_fields[] = {
        {"algorithm_name", opt->algorithm_name, VR_LO, true},
        {"algorithm_version", opt->algorithm_version, VR_LO, true},
        {"area_source", opt->area_source, VR_LO, false},
        {"seg.sop_class_uid", opt->seg_sop_class_uid, VR_UI, false},
        {"seg.sop_instance_uid", opt->seg_sop_instance_uid, VR_UI, false},
        {"seg.series_instance_uid", opt->seg_series_instance_uid, VR_UI, false},
        {"sop_instance_uid", opt->sop_instance_uid, VR_UI, false},
        {"series_instance_uid", opt->series_instance_uid, VR_UI, false},
        {"series_number", series_number, VR_IS, true},
        {"instance_number", instance_number, VR_IS, true},
        {"series_description", series_description, VR_LO, true},
        {"manufacturer", manufacturer, VR_LO, true},
    };
    std::string charset;
    if (!check_fields(fixed, src->specific_character_set, source_fields, sizeof source_fields / sizeof *source_fields,
                      option_fields, sizeof option_fields / sizeof *option_fields, charset, err, errlen))
        return -1;
    int seg_given = (opt->seg_sop_class_uid != nullptr) + (opt->seg_sop_instance_uid != nullptr) +
                    (opt->seg_series_instance_uid != nullptr);
    if (seg_given != 0 && seg_given != 3) {
        set_err(err, errlen, "opts.seg needs sop_class_uid, sop_instance_uid and series_instance_uid");
        return -1;
    }
    if (!(opt->probability >= 0 && opt->probability <= 1)) {
        set_err(err, errlen, "opts.probability must be in [0, 1], got %g", opt->probability);
        return -1;
    }
    if (opt->has_area && !(std::isfinite(opt->area_cm2) && opt->area_cm2 >= 0)) {
        set_err(err, errlen, "opts.area_cm2 must be a finite number >= 0, got %g", opt->area_cm2);
        return -1;
    }
    fixed.fit(charset, warnings);

    /* the UIDs: given or new; the group's tracking UID follows the report's */
    char series_uid[65], instance_uid[65];
    if (opt->series_instance_uid && *opt->series_instance_uid)
        snprintf(series_uid, sizeof series_uid, "%s", opt->series_instance_uid);
    else
        dcmGenerateUniqueIdentifier(series_uid, SITE_SERIES_UID_ROOT);
    if (opt->sop_instance_uid && *opt->sop_instance_uid)
        snprintf(instance_uid, sizeof instance_uid, "%s", opt->sop_instance_uid);
    else
        dcmGenerateUniqueIdentifier(instance_uid, SITE_INSTANCE_UID_ROOT);
    std::string tracking_uid = derived({"lpnx.sr.tracking", instance_uid});
    std::string observer_uid = derived({"lpnx.sr.device", manufacturer, opt->algorithm_name, opt->algorithm_version});

    /* the document */
    DSRDocument doc(DSRTypes::DT_ComprehensiveSR);
    Tree t{doc.getTree(), err, errlen, log};
    if (!t.ok(doc.createNewSeriesInStudy(src->study_instance_uid, OFFalse), "start the series")) return -1;
    if (!charset.empty()) t.ok(doc.setSpecificCharacterSet(charset.c_str(), OFFalse), "set the character set");
    t.ok(doc.setSeriesNumber(series_number, OFFalse), "set the series number");
    t.ok(doc.setInstanceNumber(instance_number, OFFalse), "set the instance number");
    t.ok(doc.setSeriesDescription(series_description, OFFalse), "set the series description");
    t.ok(doc.setManufacturer(manufacturer, OFFalse), "set the manufacturer");
    t.ok(doc.setManufacturerModelName(opt->algorithm_name, OFFalse), "set the model name");
    t.ok(doc.setSoftwareVersions(opt->algorithm_version, OFFalse), "set the software versions");

    /* root, language, observer, procedure */
    using T = DSRTypes;
    if (t.add(T::RT_isRoot, T::VT_Container, CODE_DCM_ImagingMeasurementReport, false, "the root"))
        t.ok(t.tree.getCurrentContentItem().setTemplateIdentification("1500", "DCMR"), "set the template");
    t.code(T::RT_hasConceptMod, CODE_DCM_LanguageOfContentItemAndDescendants, ENGLISH_US, true, "the language");
    t.code(T::RT_hasObsContext, CODE_DCM_ObserverType, CODE_DCM_Device, false, "the observer type");
    t.text(T::RT_hasObsContext, T::VT_UIDRef, CODE_DCM_DeviceObserverUID, observer_uid, false, "the observer UID");
    t.text(T::RT_hasObsContext, T::VT_Text, CODE_DCM_DeviceObserverName, opt->algorithm_name, false,
           "the observer name");
    t.text(T::RT_hasObsContext, T::VT_Text, CODE_DCM_DeviceObserverManufacturer, manufacturer, false,
           "the observer manufacturer");
    t.text(T::RT_hasObsContext, T::VT_Text, CODE_DCM_DeviceObserverModelName, opt->algorithm_name, false,
           "the observer model name");
    t.code(T::RT_hasConceptMod, CODE_DCM_ProcedureReported, CHEST_X_RAY, false, "the procedure");

    /* the image library: the source image */
    DSRImageReferenceValue source_ref(src->sop_class_uid, src->sop_instance_uid);
    t.add(T::RT_contains, T::VT_Container, CODE_DCM_ImageLibrary, false, "the image library");
    t.add(T::RT_contains, T::VT_Container, CODE_DCM_ImageLibraryGroup, true, "the image library group");
    t.image(DSRCodedEntryValue(), source_ref, true, "the source image");
    if (!t.failed) t.tree.goUp();
    if (!t.failed) t.tree.goUp();

    /* the measurements */
    t.add(T::RT_contains, T::VT_Container, CODE_DCM_ImagingMeasurements, false, "the measurements");
    t.add(T::RT_contains, T::VT_Container, CODE_DCM_MeasurementGroup, true, "the measurement group");
    t.text(T::RT_contains, T::VT_Text, CODE_DCM_TrackingIdentifier, "Pneumothorax", true, "the tracking identifier");
    t.text(T::RT_contains, T::VT_UIDRef, CODE_DCM_TrackingUniqueIdentifier, tracking_uid, false, "the tracking UID");
    t.code(T::RT_contains, CODE_DCM_Finding, PNEUMOTHORAX, false, "the finding");
    if (seg_given) {
        /* TID 1410: the segmentation's one frame, which holds its segment 1 */
        DSRImageReferenceValue seg_ref(opt->seg_sop_class_uid, opt->seg_sop_instance_uid);
        seg_ref.getFrameList().addItem(1);
        t.image(CODE_DCM_ReferencedSegmentationFrame, seg_ref, false, "the segmentation");
        t.text(T::RT_contains, T::VT_UIDRef, CODE_DCM_SourceSeriesForSegmentation, src->series_instance_uid, false,
               "the segmentation's source series");
    }
    t.image(CODE_DCM_SourceOfMeasurement, source_ref, false, "the source of the measurement");
    t.code(T::RT_contains, CODE_DCM_PresenceOfProperty, opt->finding ? PRESENT : ABSENT, false, "the presence");
    t.number(CODE_DCM_CertaintyOfFinding, opt->probability, RATIO, opt, "", false, "the probability");
    if (opt->has_area) {
        /* where the pixel spacing came from, as a comment on the area */
        std::string note = opt->area_source && *opt->area_source
                               ? std::string("pixel spacing from ") + opt->area_source : std::string();
        t.number(AREA, opt->area_cm2, SQUARE_CENTIMETER, opt, note, false, "the area");
    }
    if (t.failed) return -1;
    t.ok(doc.completeDocument(), "complete the document");

    /* the evidence: the source image and the segmentation */
    DSRSOPInstanceReferenceList &evidence = doc.getCurrentRequestedProcedureEvidence();
    t.ok(evidence.addItem(src->study_instance_uid, src->series_instance_uid, src->sop_class_uid,
                          src->sop_instance_uid, OFFalse),
         "list the source image as evidence");
    if (seg_given)
        t.ok(evidence.addItem(src->study_instance_uid, opt->seg_series_instance_uid, opt->seg_sop_class_uid,
                              opt->seg_sop_instance_uid, OFFalse),
             "list the segmentation as evidence");
    if (t.failed) return -1;

    /* the data set: what DSRDocument wrote, then the source's patient and
     * study and the given UIDs */
    DcmFileFormat file;
    DcmDataset *ds = file.getDataset();
    if (!t.ok(doc.write(*ds), "build the data set")) return -1;
    struct Put {
        const DcmTagKey tag;
        const char *value;
    };
    const Put puts[] = {
        {DCM_PatientName, src->patient_name},
        {DCM_PatientID, src->patient_id},
        {DCM_PatientBirthDate, src->patient_birth_date},
        {DCM_PatientSex, src->patient_sex},
        {DCM_PatientAge, src->patient_age},
        {DCM_StudyDate, src->study_date},
        {DCM_StudyTime, src->study_time},
        {DCM_StudyID, src->study_id},
        {DCM_AccessionNumber, src->accession_number},
        {DCM_ReferringPhysicianName, src->referring_physician_name},
        {DCM_StudyDescription, src->study_description},
        {DCM_SeriesInstanceUID, series_uid},
        {DCM_SOPInstanceUID, instance_uid},
    };
    for (const Put &p : puts)
        if (p.value && *p.value) t.ok(ds->putAndInsertString(p.tag, p.value), "set the source's values");
    if (t.failed) return -1;
    if (!lpnx_dcm::save_file(file, path, EXS_LittleEndianExplicit, log, err, errlen)) return -1;

    if (uids) {
        lpnx_dicom_uids u{};
        snprintf(u.sop_class_uid, sizeof u.sop_class_uid, "%s", UID_ComprehensiveSRStorage);
        snprintf(u.sop_instance_uid, sizeof u.sop_instance_uid, "%s", instance_uid);
        snprintf(u.study_instance_uid, sizeof u.study_instance_uid, "%s", src->study_instance_uid);
        snprintf(u.series_instance_uid, sizeof u.series_instance_uid, "%s", series_uid);
        *uids = u;
    }
    return 0;
}

}  // namespace

/* ------------------------------------------------------------------ */
/* the C interface                                                     */
/* ------------------------------------------------------------------ */

extern "C" {

int lpnx_dicom_sr_write(const char *path, const lpnx_seg_source *src, const lpnx_sr_options *opt,
                        lpnx_dicom_uids *uids, char *warnings, size_t warnlen, char *err, size_t errlen) {
    if (warnings && warnlen) warnings[0] = '\0';
    return lpnx_dcm::guarded(dcmtk_init, path, err, errlen, [&] {
        std::string w;
        int rc = write_sr(path, src, opt, uids, w, err, errlen);
        if (rc == 0 && warnings && warnlen) snprintf(warnings, warnlen, "%s", w.c_str());
        return rc;
    });
}

}  // extern "C"
