/* The grayscale presentation chain of a DICOM viewer (PS3.3 C.11): stored
 * values through the Modality LUT, a VOI LUT or window, and the polarity,
 * to display values in [0, 1]. Plain C on float arrays, no Lua; the caller
 * (lpnx.image.present, policy in lpnx.dicom.present) checks the options.
 * Also the order statistics lpnx.dicom.present's "auto" window is made of. */
#ifndef LPNX_IMAGE_PRESENT_H
#define LPNX_IMAGE_PRESENT_H

#include <stdint.h>

/* The VOI step: none (modality values out, unclamped), a range [low, high]
 * mapped linearly onto [0, 1] in float (the scaling lpnx used before the
 * chain, kept bit for bit), a window by VOI LUT Function (LINEAR of
 * C.11.2.1.2.1 with its c - 0.5 and w - 1, LINEAR_EXACT, SIGMOID of
 * C.11.2.1.3), or a VOI LUT table. */
typedef enum {
    LPNX_VOI_NONE,
    LPNX_VOI_RANGE,
    LPNX_VOI_LINEAR,
    LPNX_VOI_LINEAR_EXACT,
    LPNX_VOI_SIGMOID,
    LPNX_VOI_TABLE
} lpnx_voi_kind;

/* A lookup table: value v maps to data[floor(v - first)], the index
 * clamped to [0, entries - 1] (values below first take data[0], above the
 * last entry data[entries - 1]), as PS3.3 C.11.1.1 and C.11.2.1.1 say. */
typedef struct {
    const float *data; /* (entries) */
    int64_t entries;   /* >= 1 */
    double first;      /* the value data[0] stands for */
} lpnx_lut;

typedef struct {
    /* Modality LUT: the table when modality.data != NULL, else
     * value * slope + intercept. */
    lpnx_lut modality;
    double slope, intercept;
    lpnx_voi_kind voi;
    double center, width; /* LINEAR (width >= 1), LINEAR_EXACT and SIGMOID (width > 0) */
    double low, high;     /* RANGE, low < high */
    lpnx_lut voi_lut;     /* TABLE */
    double voi_max;       /* TABLE: the output is data / voi_max (2^bits - 1), > 0, at most 1 */
    int invert;           /* 1: y -> 1 - y at the end (MONOCHROME1, INVERSE); not with NONE */
} lpnx_present_opts;

/* out[i] = the chain applied to the stored value in[i]; out, in: (n).
 * In place (out == in) is fine. */
void lpnx_image_present(float *out, const float *in, int64_t n, const lpnx_present_opts *o);

/* Order statistics of in (n): the nearest-rank q-quantiles (the value of
 * rank ceil(q * m), 1-based, among the m values sorted; rank 1 for q = 0)
 * for each q[k] in [0, 1], into out (nq). With exclude_extremes, values
 * equal to the smallest or the largest of in are left out first (padding,
 * collimator, saturation), unless that leaves none. NaNs are never
 * counted; returns m, the number of values ranked (0 leaves out as is).
 * scratch: (n). */
int64_t lpnx_image_quantiles(double *out, float *scratch, const float *in, int64_t n, const double *q, int nq,
                             int exclude_extremes);

#endif /* LPNX_IMAGE_PRESENT_H */
