/* The presentation chain and the order statistics of present.h. */
#include "present.h"

#include <math.h>
#include <stdlib.h>

/* lut.data at the clamped index of v; NaN takes data[0]. */
static double lookup(const lpnx_lut *lut, double v) {
    double d = v - lut->first;
    int64_t i;
    if (!(d >= 0)) i = 0;
    else if (d >= (double)(lut->entries - 1)) i = lut->entries - 1;
    else i = (int64_t)d; /* floor, d >= 0 */
    return lut->data[i];
}

/* A window of the VOI LUT Function onto [0, 1]. */
static double window(lpnx_voi_kind kind, double c, double w, double x) {
    if (kind == LPNX_VOI_SIGMOID) return 1.0 / (1.0 + exp(-4.0 * (x - c) / w));
    if (kind == LPNX_VOI_LINEAR) { /* C.11.2.1.2.1 */
        c -= 0.5;
        w -= 1.0;
    }
    if (x <= c - w / 2) return 0.0;
    if (x > c + w / 2) return 1.0;
    return (x - c) / w + 0.5;
}

void lpnx_image_present(float *out, const float *in, int64_t n, const lpnx_present_opts *o) {
    const float low = (float)o->low, span = (float)(o->high - o->low);
    for (int64_t i = 0; i < n; i++) {
        double v = in[i];
        double m = o->modality.data ? lookup(&o->modality, v) : v * o->slope + o->intercept;
        float y;
        switch (o->voi) {
        case LPNX_VOI_NONE:
            out[i] = (float)m;
            continue;
        case LPNX_VOI_RANGE: { /* float, as (img - lo) / (hi - lo) on tensors */
            y = ((float)m - low) / span;
            y = y < 0.0f ? 0.0f : y > 1.0f ? 1.0f : y;
            break;
        }
        case LPNX_VOI_TABLE: { /* entries past 2^bits - 1 (a bad file) give 1 */
            double t = lookup(&o->voi_lut, m) / o->voi_max;
            y = (float)(t < 0 ? 0 : t > 1 ? 1 : t);
            break;
        }
        default:
            y = (float)window(o->voi, o->center, o->width, m);
            break;
        }
        out[i] = o->invert ? 1.0f - y : y;
    }
}

static int compare_floats(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

int64_t lpnx_image_quantiles(double *out, float *scratch, const float *in, int64_t n, const double *q, int nq,
                             int exclude_extremes) {
    float lo = INFINITY, hi = -INFINITY;
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (in[i] != in[i]) continue;
        if (in[i] < lo) lo = in[i];
        if (in[i] > hi) hi = in[i];
    }
    for (int64_t i = 0; i < n; i++)
        if (in[i] == in[i] && !(exclude_extremes && (in[i] == lo || in[i] == hi))) scratch[m++] = in[i];
    if (m == 0 && exclude_extremes)
        for (int64_t i = 0; i < n; i++)
            if (in[i] == in[i]) scratch[m++] = in[i];
    if (m == 0) return 0;
    qsort(scratch, (size_t)m, sizeof *scratch, compare_floats);
    for (int k = 0; k < nq; k++) {
        double r = ceil(q[k] * (double)m); /* 1-based rank */
        int64_t idx = r < 1 ? 0 : r > (double)m ? m - 1 : (int64_t)r - 1;
        out[k] = scratch[idx];
    }
    return m;
}
