/* DICOM Segmentation objects through DCMTK's dcmseg: a plain C interface
 * over the C++ shim in dicom_seg.cpp. No Lua here and no C++ in the
 * interface: every function catches what DCMTK throws and checks every
 * OFCondition, reporting failure as a non-zero return with a readable
 * reason in the caller's buffer. Nothing aborts or exits.
 *
 * Writing makes a binary Segmentation (SOP class 1.2.840.10008.5.1.4.1.1.66.4)
 * of one segment and one frame derived from one 2-D source image: the
 * source's patient and study, its Frame of Reference when it has one, a new
 * series (Modality SEG), a Derivation Image functional group and the Common
 * Instance Reference module pointing at the source, and the pixels packed
 * one bit each:
 *
 *     lpnx_seg_source src = {0};            // from the source image's attributes
 *     src.sop_class_uid = ...; src.sop_instance_uid = ...;
 *     src.study_instance_uid = ...; src.series_instance_uid = ...;
 *     lpnx_seg_options opt;
 *     lpnx_dicom_seg_defaults(&opt);        // "Pneumothorax", SNOMED CT 36118008, ...
 *     lpnx_seg_uids uids;
 *     if (lpnx_dicom_seg_write("ID.dcm", mask, rows, columns, &src, &opt, &uids, err, sizeof err) != 0)
 *         fail(err);
 *
 * Reading is two-phase, like dicom.h, so that the caller can allocate the
 * mask with its own allocator while the parsed file is held by a handle:
 *
 *     lpnx_seg *s = NULL;
 *     if (lpnx_dicom_seg_open(&s, path, err, sizeof err) != 0) fail(err);
 *     const lpnx_seg_info *info = lpnx_dicom_seg_info_of(s);
 *     int frames = lpnx_dicom_seg_frames(s, 1);           // frames of segment 1
 *     float *mask = malloc((frames ? frames : 1) * info->rows * info->columns * sizeof *mask);
 *     lpnx_dicom_seg_mask(s, 1, mask);                    // 0/1, or fraction for FRACTIONAL
 *     lpnx_dicom_seg_close(s);
 */
#ifndef LPNX_IO_DICOM_SEG_H
#define LPNX_IO_DICOM_SEG_H

#include <stddef.h>

#include "dicom.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A coded concept: code value, coding scheme designator, code meaning. */
typedef struct {
    const char *value, *scheme, *meaning;
} lpnx_seg_code;

/* What the segmentation takes over from its source image. The four UIDs
 * and the SOP class are required; every other string may be NULL (Type 2
 * attributes are then written empty). rows and columns, when > 0, must
 * equal the mask's. */
typedef struct {
    const char *sop_class_uid, *sop_instance_uid, *study_instance_uid, *series_instance_uid;
    const char *frame_of_reference_uid;
    const char *patient_name, *patient_id, *patient_birth_date, *patient_sex, *patient_age;
    const char *study_date, *study_time, *study_id, *accession_number, *referring_physician_name,
        *study_description;
    const char *specific_character_set;
    const char *patient_orientation;  /* e.g. "L\\F" */
    /* "01" when the source has been lossy compressed, with its ratio(s)
     * and method(s) as they appear in the source ("4.6", "ISO_10918_1") */
    const char *lossy_image_compression, *lossy_image_compression_ratio, *lossy_image_compression_method;
    int rows, columns;
    /* PixelSpacing (not ImagerPixelSpacing) of the source: written as the
     * Pixel Measures of a segmentation without a Frame of Reference (with
     * one, PS3.3 would also want a slice thickness, which a projection
     * image does not have, so it is left out) */
    int has_pixel_spacing;
    double pixel_spacing[2];    /* row, column spacing in mm, > 0 */
} lpnx_seg_source;

/* What the segmentation says about itself. lpnx_dicom_seg_defaults fills
 * in lpnx's values; NULL UIDs are generated. */
typedef struct {
    const char *segment_label;        /* LO, e.g. "Pneumothorax" */
    const char *segment_description;  /* ST or NULL */
    lpnx_seg_code category;           /* Segmented Property Category (CID 7150) */
    lpnx_seg_code type;               /* Segmented Property Type (CID 7151) */
    const char *algorithm_name, *algorithm_version;
    double color[3];                  /* recommended display colour, sRGB in [0, 1] */
    const char *manufacturer, *model_name, *device_serial_number, *software_versions;
    const char *series_description, *series_number, *instance_number;
    const char *content_label;        /* CS, e.g. "PNEUMOTHORAX" */
    const char *content_description, *content_creator;
    const char *series_instance_uid, *sop_instance_uid;
} lpnx_seg_options;

/* The UIDs a written object carries, NUL-terminated ("" when absent): the
 * same fields as a written image's (dicom.h). */
typedef lpnx_dicom_uids lpnx_seg_uids;

/* lpnx's defaults: segment "Pneumothorax", category SCT 49755003
 * "Morphologically Altered Structure", type SCT 36118008 "Pneumothorax",
 * algorithm "lpnx" (version given by the caller, "unknown" here), red,
 * manufacturer and model "lpnx", content label "PNEUMOTHORAX". */
void lpnx_dicom_seg_defaults(lpnx_seg_options *opt);

/* Writes mask (rows x columns bytes, row-major; non-zero = inside) as a
 * binary Segmentation of the source image. Strings are checked against
 * their VR by DCMTK. The source's UIDs and every option must be valid (a
 * bad one is reported by name: "opts.label '...' is not a valid ...").
 * The source's patient, study, frame of reference and lossy history are
 * copied as faithfully as their VR allows and never fail the write: a
 * value longer than its VR permits (LO, SH, and each component group of a
 * PN) is cut at the limit on a character boundary, any other invalid one
 * is left out; each such change is a line of warnings (lines separated
 * by '\n'; warnings may be NULL; "" when there is none). Atomic (file.h): on failure no
 * file or temp file is left and a file already at path is untouched; err
 * holds the reason (without the path). */
int lpnx_dicom_seg_write(const char *path, const unsigned char *mask, int rows, int columns,
                         const lpnx_seg_source *src, const lpnx_seg_options *opt, lpnx_seg_uids *uids,
                         char *warnings, size_t warnlen, char *err, size_t errlen);

/* ------------------------------------------------------------------ */
/* reading                                                             */
/* ------------------------------------------------------------------ */

/* Number of string attributes reported in lpnx_seg_info.strings. */
#define LPNX_SEG_NSTRINGS 17

/* A string attribute of a read segmentation: key is the Lua-facing name,
 * value NULL when absent or empty. */
typedef struct {
    const char *key;
    const char *value;
} lpnx_seg_string;

/* One item of the Segment Sequence. Strings are NULL when absent. */
typedef struct {
    int number;                      /* Segment Number, >= 1 */
    const char *label, *description, *algorithm_type, *algorithm_name;
    lpnx_seg_code category, type;
    int frames;                      /* frames of the file that belong to it */
    int has_color;
    double color[3];                 /* from Recommended Display CIELab Value, sRGB in [0, 1] */
} lpnx_seg_segment;

/* An image the segmentation references (Referenced Series Sequence of the
 * Common Instance Reference module, then the Source Image Sequences of the
 * Derivation Image functional groups). series_instance_uid may be NULL. */
typedef struct {
    const char *sop_class_uid, *sop_instance_uid, *series_instance_uid;
} lpnx_seg_reference;

/* What a segmentation file holds. Everything belongs to the handle and
 * lives until lpnx_dicom_seg_close. */
typedef struct {
    int rows, columns, number_of_frames;
    int fractional;                  /* 0 BINARY, 1 FRACTIONAL */
    int max_fractional_value;        /* 1 for BINARY */
    int nsegments;
    const lpnx_seg_segment *segments;
    int nreferences;
    const lpnx_seg_reference *references;
    int has_pixel_spacing;
    double pixel_spacing[2];
    /* sop_class_uid, sop_instance_uid, study_instance_uid, series_instance_uid,
     * frame_of_reference_uid, patient_id, patient_name, patient_sex,
     * patient_birth_date, study_date, modality, series_description,
     * series_number, content_label, content_description, manufacturer,
     * segmentation_type */
    lpnx_seg_string strings[LPNX_SEG_NSTRINGS];
} lpnx_seg_info;

typedef struct lpnx_seg lpnx_seg; /* a loaded segmentation with its pixel data in memory */

/* Loads path and checks that it is a Segmentation whose attributes fit
 * together (sizes, bits, a segment for every frame, enough pixel data).
 * On failure returns non-zero, leaves *out NULL, has freed everything and
 * puts the reason (without the path) in err, e.g. "not a Segmentation
 * (SOP class 1.2.840.10008.5.1.4.1.1.7)". */
int lpnx_dicom_seg_open(lpnx_seg **out, const char *path, char *err, size_t errlen);

const lpnx_seg_info *lpnx_dicom_seg_info_of(const lpnx_seg *s);

/* Number of frames that belong to segment number (0 when it has none or
 * does not exist). */
int lpnx_dicom_seg_frames(const lpnx_seg *s, int number);

/* Writes the frames of segment number, in file order, as floats
 * (frames, rows, columns) row-major: 0/1 for BINARY, value / maximum
 * fractional value for FRACTIONAL. Writes nothing for a segment without
 * frames. */
void lpnx_dicom_seg_mask(const lpnx_seg *s, int number, float *out);

/* Frees the handle; NULL is fine. */
void lpnx_dicom_seg_close(lpnx_seg *s);

#ifdef __cplusplus
}
#endif

#endif /* LPNX_IO_DICOM_SEG_H */
