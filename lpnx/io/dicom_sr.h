/* DICOM Structured Reports through DCMTK's dcmsr: a plain C interface over
 * the C++ shim in dicom_sr.cpp. No Lua here and no C++ in the interface:
 * every function catches what DCMTK throws and checks every OFCondition,
 * reporting failure as a non-zero return with a readable reason in the
 * caller's buffer. Nothing aborts or exits.
 *
 * Writing makes a Comprehensive SR (SOP class 1.2.840.10008.5.1.4.1.1.88.33)
 * in the form of TID 1500 "Measurement Report" that says what lpnx found on
 * one chest X-ray: the source's patient and study (as a segmentation
 * copies them, dicom_seg.h), a new series (Modality SR), and one
 * Measurement Group holding the finding Pneumothorax, whether it is
 * present, its probability, its area when known, and references to the
 * source image and to the segmentation that outlines it:
 *
 *     lpnx_seg_source src = {0};            // the source image's attributes, as for a segmentation
 *     lpnx_sr_options opt = {0};
 *     opt.finding = 1; opt.probability = 0.93;
 *     opt.algorithm_name = "lpnx-unet"; opt.algorithm_version = "1.0";
 *     lpnx_dicom_uids uids;
 *     if (lpnx_dicom_sr_write("SR.dcm", &src, &opt, &uids, warn, sizeof warn, err, sizeof err) != 0)
 *         fail(err);
 */
#ifndef LPNX_IO_DICOM_SR_H
#define LPNX_IO_DICOM_SR_H

#include <stddef.h>

#include "dicom.h"
#include "dicom_seg.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What the report says. Strings may be NULL unless marked required. */
typedef struct {
    int finding;                 /* 1: pneumothorax present, 0: absent */
    double probability;          /* image-level probability, in [0, 1] */
    int has_area;
    double area_cm2;             /* >= 0, when has_area */
    const char *area_source;     /* where the spacing came from, e.g. "PixelSpacing" */
    const char *algorithm_name, *algorithm_version; /* required */
    /* the segmentation the report describes (in the source's study): all
     * three or none */
    const char *seg_sop_class_uid, *seg_sop_instance_uid, *seg_series_instance_uid;
    const char *sop_instance_uid, *series_instance_uid; /* NULL: new ones */
    const char *series_number, *instance_number;        /* NULL: "1001", "1" */
    const char *series_description;                     /* NULL: "Pneumothorax report (lpnx)" */
    const char *manufacturer;                           /* NULL: "lpnx" */
} lpnx_sr_options;

/* Writes the report of src (whose SOP class and instance, study and series
 * UIDs are required) to path. Options are checked against their VR and
 * range, a bad one is reported by name ("opts.series_number 'x' is not a
 * valid integer string (IS)"). The source's patient and study are copied
 * as lpnx_dicom_seg_write copies them (cut or left out with a line of
 * warnings each; warnings may be NULL). Atomic (file.h): on failure no
 * file or temp file is left and a file already at path is untouched; err
 * holds the reason (without the path). */
int lpnx_dicom_sr_write(const char *path, const lpnx_seg_source *src, const lpnx_sr_options *opt,
                        lpnx_dicom_uids *uids, char *warnings, size_t warnlen, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* LPNX_IO_DICOM_SR_H */
