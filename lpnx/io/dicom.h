/* DICOM images through DCMTK: a plain C interface over the C++ shim in
 * dicom.cpp. No Lua here and no C++ in the interface: every function
 * catches what DCMTK throws and reports failure as a non-zero return with
 * a readable reason in the caller's buffer. Nothing aborts or exits.
 *
 * Reading is two-phase so that the caller can allocate the output with its
 * own allocator (which may raise) while the decoded file is held by a
 * handle it can always close:
 *
 *     lpnx_dicom *d = NULL;
 *     if (lpnx_dicom_open(&d, path, 1, err, sizeof err) != 0) fail(err);
 *     const lpnx_dicom_info *info = lpnx_dicom_info_of(d);
 *     float *out = malloc(info->channels * info->rows * info->columns * sizeof *out);
 *     lpnx_dicom_pixels(d, out);      // (channels, rows, columns), cannot fail
 *     lpnx_dicom_close(d);
 */
#ifndef LPNX_IO_DICOM_H
#define LPNX_IO_DICOM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest number of stored values (rows x columns x frames x samples) a
 * file may declare; larger files are refused before anything is decoded. */
#define LPNX_DICOM_MAX_VALUES 2147483647.0 /* 2^31 - 1 */

/* Number of string attributes reported in lpnx_dicom_info.strings. */
#define LPNX_DICOM_NSTRINGS 27

/* A DICOM string attribute: key is the Lua-facing name ("patient_id"),
 * value the first value with padding removed (every value, joined by
 * backslashes, for patient_orientation and the lossy compression ratio
 * and method), NULL when the attribute is absent or empty. */
typedef struct {
    const char *key;
    const char *value;
} lpnx_dicom_string;

/* A lookup table of a Modality or VOI LUT Sequence item (PS3.3 C.11.1,
 * C.11.2): LUTDescriptor (entries, 0 read as 65536; the first stored value
 * mapped, signed when the image's pixels are; bits per entry) and LUTData
 * (entries values). Items whose LUTData is missing or shorter than the
 * descriptor says are left out. */
typedef struct {
    int entries;                /* 1..65536 */
    int first_mapped;           /* input value of data[0] */
    int bits;                   /* bits per entry, 1..16 */
    const unsigned short *data; /* (entries) */
    const char *explanation;    /* LUTExplanation, NULL when absent */
    const char *type;           /* ModalityLUTType (Modality LUT only), NULL when absent */
} lpnx_dicom_lut;

/* What a file says about its image (before decompression: photometric and
 * transfer syntax are as stored). Strings belong to the handle and live
 * until lpnx_dicom_close. */
typedef struct {
    int rows, columns;          /* image size, each >= 1 */
    int number_of_frames;       /* >= 1 (1 when NumberOfFrames is absent) */
    int frame;                  /* the 1-based frame lpnx_dicom_pixels returns */
    int samples_per_pixel;      /* 1 or 3 */
    int channels;               /* of the output: 1 (monochrome) or 3 (RGB) */
    int bits_allocated;         /* 8 or 16 */
    int bits_stored;            /* 1..bits_allocated */
    int high_bit;               /* bits_stored-1..bits_allocated-1 */
    int pixel_representation;   /* 0 unsigned, 1 two's complement */
    const char *photometric;    /* as stored, e.g. "MONOCHROME1", "YBR_FULL_422" */
    const char *transfer_syntax;      /* UID string */
    const char *transfer_syntax_name; /* DCMTK's name, e.g. "JPEG Baseline" */
    /* Numbers: has_x is 0 when the attribute is absent (first value when
     * multi-valued). The pixels always use slope 1 / intercept 0 when the
     * attribute is absent, and ignore both for colour images. */
    int has_rescale_slope, has_rescale_intercept, has_window_center, has_window_width;
    double rescale_slope, rescale_intercept, window_center, window_width;
    int has_pixel_spacing;      /* from PixelSpacing, else ImagerPixelSpacing */
    double pixel_spacing[2];    /* row spacing, column spacing (mm) */
    int pixel_spacing_is_imager; /* 1 when pixel_spacing came from ImagerPixelSpacing */
    int has_imager_pixel_spacing;
    double imager_pixel_spacing[2]; /* ImagerPixelSpacing: row, column (mm) */
    /* view_position, patient_sex, patient_age, patient_id, patient_name,
     * modality, body_part_examined, sop_class_uid, sop_instance_uid,
     * study_instance_uid, series_instance_uid, frame_of_reference_uid,
     * study_date, series_description, conversion_type, specific_character_set,
     * patient_birth_date, study_time, study_id, accession_number,
     * referring_physician_name, study_description, patient_orientation,
     * lossy_image_compression, lossy_image_compression_ratio,
     * lossy_image_compression_method, series_number */
    lpnx_dicom_string strings[LPNX_DICOM_NSTRINGS];
    /* EstimatedRadiographicMagnificationFactor (0018,1114): ImagerPixelSpacing
     * divided by it is the spacing at the patient (PS3.3 C.8.11.7.1.1) */
    int has_magnification_factor;
    double magnification_factor;
    /* The presentation attributes (PS3.3 C.11), for lpnx.dicom.present.
     * Arrays and strings belong to the handle. Windows: every
     * (WindowCenter, WindowWidth) pair, in file order (the shorter of the
     * two lists decides the count), each with its explanation or NULL. */
    int window_count;
    const double *window_centers, *window_widths; /* (window_count) */
    const char *const *window_explanations;        /* (window_count), NULL entries when absent */
    const char *voi_lut_function;       /* VOILUTFunction, NULL when absent */
    const char *presentation_lut_shape; /* PresentationLUTShape, NULL when absent */
    int has_modality_lut;               /* 1 when the ModalityLUTSequence has a usable item */
    lpnx_dicom_lut modality_lut;        /* its first item */
    int voi_lut_count;                  /* usable items of the VOILUTSequence */
    const lpnx_dicom_lut *voi_luts;     /* (voi_lut_count), in file order */
} lpnx_dicom_info;

typedef struct lpnx_dicom lpnx_dicom; /* a loaded file with its pixel data decoded */

/* Loads path, checks its image attributes and decodes its pixel data
 * (frame is 1-based). On success *out owns the handle. On failure returns
 * non-zero, leaves *out NULL, has freed everything it allocated, and puts
 * the reason (without the path) in err, e.g. "no PixelData element",
 * "frame 4 out of range (the file has 3 frames)". */
int lpnx_dicom_open(lpnx_dicom **out, const char *path, long long frame, char *err, size_t errlen);

const lpnx_dicom_info *lpnx_dicom_info_of(const lpnx_dicom *d);

/* Writes the chosen frame as floats, (channels, rows, columns) row-major:
 * stored values (masked to bits_stored, sign-extended when signed),
 * MONOCHROME1 inverted on the stored range (min + max - v), then
 * value * slope + intercept for monochrome; RGB for colour images (YBR
 * converted, planes separated). */
void lpnx_dicom_pixels(const lpnx_dicom *d, float *out);

/* Writes the chosen frame's stored values as floats, (channels, rows,
 * columns): like lpnx_dicom_pixels, without the MONOCHROME1 inversion and
 * without the rescale (colour images are the same as there). The input of
 * the presentation chain (lpnx.dicom.present). */
void lpnx_dicom_stored_pixels(lpnx_dicom *d, float *out);

/* Frees the handle; NULL is fine. */
void lpnx_dicom_close(lpnx_dicom *d);

/* Attributes of a written file; NULL strings are left empty (Type 2) or
 * generated (UIDs). A zeroed struct writes a monochrome image. */
typedef struct {
    const char *patient_id, *patient_name, *patient_sex, *patient_age;
    const char *view_position, *body_part_examined, *modality, *series_description, *study_date;
    const char *study_time, *study_id;
    const char *study_instance_uid, *series_instance_uid, *sop_instance_uid, *frame_of_reference_uid;
    int has_pixel_spacing;
    double pixel_spacing[2]; /* row, column; > 0 */
    int samples_per_pixel;   /* 1 (or 0): MONOCHROME2; 3: RGB, pixels interleaved R G B */
    /* a result derived from a source image (an overlay): NULL = left out,
     * series and instance number "1" */
    const char *series_number, *instance_number;  /* IS */
    const char *derivation_description;            /* ST */
    const char *burned_in_annotation;              /* CS, "YES" or "NO" */
    /* the source, as SourceImageSequence and ReferencedImageSequence; both
     * or neither; with them ImageType is DERIVED\SECONDARY */
    const char *source_sop_class_uid, *source_sop_instance_uid;
    /* monochrome pixel format: bits_stored 0 or 8 writes bytes; 9..16
     * writes 16-bit words (BitsAllocated 16, HighBit bits_stored - 1,
     * unsigned), the pixels then rows x columns uint16 values in native
     * order (no JPEG: uncompressed only) */
    int bits_stored;
    int monochrome1;         /* PhotometricInterpretation MONOCHROME1 (white = low values) */
    int has_window;          /* a VOI window: WindowCenter, WindowWidth (width >= 1) */
    double window_center, window_width;
    /* Digital X-Ray Image Storage - For Presentation (1.2.840.10008.5.1.4.1.1.1.1)
     * instead of Secondary Capture: Modality DX and the DX modules' Type 1
     * attributes (PresentationIntentType, PixelIntensityRelationship LOG,
     * rescale identity, PresentationLUTShape, ImagerPixelSpacing, ...) */
    int dx;
} lpnx_dicom_write_meta;

/* The UIDs a written file carries (given or generated), NUL-terminated. */
typedef struct {
    char sop_class_uid[65];
    char sop_instance_uid[65];
    char study_instance_uid[65];
    char series_instance_uid[65];
    char frame_of_reference_uid[65];
} lpnx_dicom_uids;

/* Writes an 8-bit MONOCHROME2 Secondary Capture image (SOP class
 * 1.2.840.10008.5.1.4.1.1.7, ConversionType WSD, Modality "CR" unless
 * meta->modality says otherwise) of rows x columns bytes (row-major), or
 * with meta->samples_per_pixel 3 an RGB one of rows x columns x 3 bytes
 * (R G B of each pixel in turn, PlanarConfiguration 0), JPEG baseline
 * compressed with the given quality (1..100) when jpeg != 0 (an RGB image
 * is then stored as YBR_FULL_422, as DCMTK's encoder converts it), else
 * explicit VR little endian. Strings are checked against their VR
 * (CS, AS, DA, LO, PN, UI); any non-ASCII byte makes the file UTF-8
 * (SpecificCharacterSet ISO_IR 192). Atomic (file.h): a temp file in the
 * same folder is written, fsync'ed (with the permission bits of the file it
 * replaces, or 0644) and renamed over path; on failure no temp file is
 * left, a file already at path is untouched, and err holds the reason
 * (without the path). meta->bits_stored, monochrome1, has_window and dx
 * (see above) write 12-16-bit MONOCHROME1/2 DX images with a VOI window;
 * pixels then points to uint16 values. */
int lpnx_dicom_write(const char *path, const void *pixels, int rows, int columns,
                     const lpnx_dicom_write_meta *meta, int jpeg, int quality,
                     lpnx_dicom_uids *uids, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* LPNX_IO_DICOM_H */
