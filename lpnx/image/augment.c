/* Augmentation and preprocessing kernels: resampling (shift-scale-rotate,
 * remap by a displacement field), Gaussian blur and elastic fields,
 * intensity changes, normalisation and CLAHE. Parallel over output rows
 * (or tiles) once an image is large enough; random draws stay on one
 * thread, in order, so results depend only on the generator state. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"

/* Positions further out than this are clamped before floor() so that the
 * conversion to an integer is defined; they are outside any image. */
#define FAR 1e12

int64_t lpnx_image_reflect101(int64_t i, int64_t n) {
    if (n == 1) return 0;
    const int64_t period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

/* The pixel (x, y) of the plane, or what the border gives outside it. */
static inline float fetch(const float *p, int64_t H, int64_t W, int64_t x, int64_t y, const lpnx_sampling *s) {
    if (x < 0 || x >= W || y < 0 || y >= H) {
        switch (s->border) {
        case LPNX_BORDER_CONSTANT:
            return s->value;
        case LPNX_BORDER_REPLICATE:
            x = x < 0 ? 0 : x >= W ? W - 1 : x;
            y = y < 0 ? 0 : y >= H ? H - 1 : y;
            break;
        case LPNX_BORDER_REFLECT:
            x = lpnx_image_reflect101(x, W);
            y = lpnx_image_reflect101(y, H);
            break;
        }
    }
    return p[y * W + x];
}

float lpnx_image_sample(const float *p, int64_t H, int64_t W, double x, double y, lpnx_sampling s) {
    /* fmax/fmin also send a NaN position to -FAR: defined, and outside. */
    x = fmin(fmax(x, -FAR), FAR);
    y = fmin(fmax(y, -FAR), FAR);
    if (s.mode == LPNX_SAMPLE_NEAREST)
        return fetch(p, H, W, (int64_t)floor(x + 0.5), (int64_t)floor(y + 0.5), &s);
    const double fx = floor(x), fy = floor(y);
    const int64_t x0 = (int64_t)fx, y0 = (int64_t)fy;
    const double ax = x - fx, ay = y - fy; /* weights of the second column and row */
    double top = fetch(p, H, W, x0, y0, &s);
    if (ax != 0) top = (1 - ax) * top + ax * fetch(p, H, W, x0 + 1, y0, &s);
    if (ay == 0) return (float)top;
    double bottom = fetch(p, H, W, x0, y0 + 1, &s);
    if (ax != 0) bottom = (1 - ax) * bottom + ax * fetch(p, H, W, x0 + 1, y0 + 1, &s);
    return (float)((1 - ay) * top + ay * bottom);
}

/* ---- geometry -------------------------------------------------------- */

/* cos and sin of an angle in degrees, exact at multiples of 90. */
static void cos_sin_degrees(double degrees, double *c, double *s) {
    const double quarter = degrees / 90.0;
    if (quarter == floor(quarter) && fabs(quarter) < 1e15) {
        static const double cos4[4] = {1, 0, -1, 0}, sin4[4] = {0, 1, 0, -1};
        int64_t k = (int64_t)fmod(quarter, 4.0);
        if (k < 0) k += 4;
        *c = cos4[k];
        *s = sin4[k];
        return;
    }
    const double radians = degrees * (3.14159265358979323846 / 180.0);
    *c = cos(radians);
    *s = sin(radians);
}

void lpnx_image_affine_matrix(double m[6], double angle_degrees, double scale,
                              double dx, double dy, double cx, double cy, int64_t H, int64_t W) {
    double c, s;
    cos_sin_degrees(angle_degrees, &c, &s);
    /* The inverse of p' = scale R(a) (p - c) + c + t is
     * p = c + R(-a) (p' - c - t) / scale, R(-a) = [cos, -sin; sin, cos]. */
    const double tx = cx + dx * (double)W, ty = cy + dy * (double)H; /* c + t */
    m[0] = c / scale;
    m[1] = -s / scale;
    m[2] = cx - m[0] * tx - m[1] * ty;
    m[3] = s / scale;
    m[4] = c / scale;
    m[5] = cy - m[3] * tx - m[4] * ty;
}

void lpnx_image_affine(float *out, const float *inp, int64_t planes, int64_t H, int64_t W,
                       const double m[6], lpnx_sampling s) {
    /* out, inp: (planes,H,W) */
    const int64_t rows = planes * H;
    #pragma omp parallel for schedule(static) if (rows * W >= LPNX_PARALLEL_MIN / 4)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t p = r / H, y = r % H;
        const float *plane = inp + p * H * W;
        float *o = out + r * W;
        const double bx = m[1] * (double)y + m[2], by = m[4] * (double)y + m[5];
        for (int64_t x = 0; x < W; x++)
            o[x] = lpnx_image_sample(plane, H, W, m[0] * (double)x + bx, m[3] * (double)x + by, s);
    }
}

void lpnx_image_remap(float *out, const float *inp, const float *field, int64_t planes,
                      int64_t H, int64_t W, lpnx_sampling s) {
    /* out, inp: (planes,H,W); field: (2,H,W), dx then dy */
    const int64_t rows = planes * H, n = H * W;
    #pragma omp parallel for schedule(static) if (rows * W >= LPNX_PARALLEL_MIN / 4)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t p = r / H, y = r % H;
        const float *plane = inp + p * n, *fx = field + y * W, *fy = field + n + y * W;
        float *o = out + r * W;
        for (int64_t x = 0; x < W; x++)
            o[x] = lpnx_image_sample(plane, H, W, (double)x + fx[x], (double)y + fy[x], s);
    }
}

/* ---- filters --------------------------------------------------------- */

int64_t lpnx_image_gaussian_radius(double sigma) {
    if (!(sigma > 0)) return 0;
    const int64_t size = (int64_t)floor(sigma * 8.0 + 1.0 + 0.5) | 1;
    return size / 2;
}

void lpnx_image_gaussian_kernel(float *w, int64_t r, double sigma) {
    /* w: (2r+1) */
    if (r == 0) {
        w[0] = 1;
        return;
    }
    double sum = 0;
    for (int64_t k = -r; k <= r; k++) sum += exp(-(double)(k * k) / (2 * sigma * sigma));
    for (int64_t k = -r; k <= r; k++) w[k + r] = (float)(exp(-(double)(k * k) / (2 * sigma * sigma)) / sum);
}

lpnx_status lpnx_image_gaussian_blur(float *out, float *tmp, const float *inp, int64_t planes,
                                     int64_t H, int64_t W, double sigma) {
    /* out, tmp, inp: (planes,H,W) */
    const int64_t r = lpnx_image_gaussian_radius(sigma), taps = 2 * r + 1;
    float *w = malloc((size_t)taps * sizeof *w); /* (2r+1) kernel */
    int64_t *ix = malloc((size_t)(W + 2 * r + H + 2 * r) * sizeof *ix);
    /* ix: (W+2r) source column of padded column j, then iy (H+2r) rows */
    if (!w || !ix) {
        free(w);
        free(ix);
        return LPNX_ENOMEM;
    }
    int64_t *iy = ix + W + 2 * r;
    lpnx_image_gaussian_kernel(w, r, sigma);
    for (int64_t j = 0; j < W + 2 * r; j++) ix[j] = lpnx_image_reflect101(j - r, W);
    for (int64_t j = 0; j < H + 2 * r; j++) iy[j] = lpnx_image_reflect101(j - r, H);
    const int64_t rows = planes * H;
    const int par = rows * W * taps >= LPNX_PARALLEL_MIN;
    /* rows: inp -> tmp */
    #pragma omp parallel for schedule(static) if (par)
    for (int64_t row = 0; row < rows; row++) {
        const float *in = inp + row * W;
        float *t = tmp + row * W;
        for (int64_t x = 0; x < W; x++) {
            float acc = 0;
            if (x >= r && x + r < W) {
                const float *q = in + x - r;
                for (int64_t k = 0; k < taps; k++) acc += w[k] * q[k];
            } else {
                const int64_t *src = ix + x;
                for (int64_t k = 0; k < taps; k++) acc += w[k] * in[src[k]];
            }
            t[x] = acc;
        }
    }
    /* columns: tmp -> out, a whole output row at a time */
    #pragma omp parallel for schedule(static) if (par)
    for (int64_t row = 0; row < rows; row++) {
        const int64_t p = row / H, y = row % H;
        const float *plane = tmp + p * H * W;
        float *o = out + row * W;
        const float *first = plane + iy[y] * W;
        for (int64_t x = 0; x < W; x++) o[x] = w[0] * first[x];
        for (int64_t k = 1; k < taps; k++) {
            const float *q = plane + iy[y + k] * W;
            const float wk = w[k];
            for (int64_t x = 0; x < W; x++) o[x] += wk * q[x];
        }
    }
    free(w);
    free(ix);
    return LPNX_OK;
}

lpnx_status lpnx_image_elastic_field(float *field, float *tmp, lpnx_rng *g, int64_t H, int64_t W,
                                     double alpha, double sigma) {
    /* field, tmp: (2,H,W) */
    const size_t n = (size_t)(2 * H * W);
    lpnx_rng_fill_uniform(g, field, n, -1.0f, 1.0f);
    if (sigma > 0) {
        lpnx_status st = lpnx_image_gaussian_blur(field, tmp, field, 2, H, W, sigma);
        if (st != LPNX_OK) return st;
    }
    const float a = (float)alpha;
    #pragma omp parallel for schedule(static) if (n >= LPNX_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) field[i] *= a;
    return LPNX_OK;
}

/* ---- intensity ------------------------------------------------------- */

static inline float clamp01(float v) { return v < 0 ? 0 : v > 1 ? 1 : v; } /* NaN stays NaN */

void lpnx_image_brightness_contrast(float *out, const float *inp, size_t n, float brightness,
                                    float contrast) {
    const float a = 1.0f + contrast;
    #pragma omp parallel for schedule(static) if (n >= LPNX_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) out[i] = clamp01(inp[i] * a + brightness);
}

void lpnx_image_gamma(float *out, const float *inp, size_t n, float g) {
    #pragma omp parallel for schedule(static) if (n >= LPNX_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) out[i] = powf(clamp01(inp[i]), g);
}

void lpnx_image_gaussian_noise(float *out, const float *inp, size_t n, float std, lpnx_rng *g) {
    lpnx_rng_fill_normal(g, out, n, 0.0f, std);
    #pragma omp parallel for schedule(static) if (n >= LPNX_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] + out[i];
}

void lpnx_image_normalize(float *out, const float *inp, int64_t N, int64_t C, int64_t hw,
                          const float *mean, const float *std) {
    /* out, inp: (N,C,hw); mean, std: (C) */
    const int64_t planes = N * C;
    #pragma omp parallel for schedule(static) if (planes * hw >= LPNX_PARALLEL_MIN)
    for (int64_t p = 0; p < planes; p++) {
        const float m = mean[p % C], s = std[p % C];
        const float *i = inp + p * hw;
        float *o = out + p * hw;
        for (int64_t k = 0; k < hw; k++) o[k] = (i[k] - m) / s;
    }
}

void lpnx_image_to_rgb(float *out, const float *inp, int64_t N, int64_t hw) {
    /* out: (N,3,hw); inp: (N,1,hw) */
    for (int64_t b = 0; b < N; b++)
        for (int c = 0; c < 3; c++) memcpy(out + (b * 3 + c) * hw, inp + b * hw, (size_t)hw * sizeof *out);
}

/* ---- CLAHE ----------------------------------------------------------- */

static inline int64_t bin_of(float v, int64_t bins) {
    const float b = v * (float)bins;
    if (!(b > 0)) return 0; /* also NaN */
    return b >= (float)bins ? bins - 1 : (int64_t)b;
}

/* Clips a tile histogram at limit and spreads the excess as OpenCV does. */
static void clip_histogram(int32_t *hist, int64_t bins, int64_t limit) {
    int64_t clipped = 0;
    for (int64_t i = 0; i < bins; i++) {
        if (hist[i] > limit) {
            clipped += hist[i] - limit;
            hist[i] = (int32_t)limit;
        }
    }
    const int64_t batch = clipped / bins;
    int64_t residual = clipped - batch * bins;
    for (int64_t i = 0; i < bins; i++) hist[i] += (int32_t)batch;
    if (residual != 0) {
        int64_t step = bins / residual;
        if (step < 1) step = 1;
        for (int64_t i = 0; i < bins && residual > 0; i += step, residual--) hist[i]++;
    }
}

void lpnx_image_clahe(float *out, float *lut, int32_t *hist, const float *inp, int64_t H, int64_t W,
                      lpnx_clahe_opts o) {
    /* out, inp: (H,W); lut, hist: (tiles_y*tiles_x, bins) */
    const int64_t tx = o.tiles_x, ty = o.tiles_y, bins = o.bins;
    int64_t He = H, We = W; /* the extended plane */
    if (H % ty != 0 || W % tx != 0) {
        He = H + ty - H % ty;
        We = W + tx - W % tx;
    }
    const int64_t th = He / ty, tw = We / tx, total = th * tw;
    int64_t limit = 0; /* 0: no clipping */
    if (o.clip > 0) {
        const double c = o.clip * (double)total / (double)bins;
        limit = c >= (double)total ? total : (int64_t)c;
        if (limit < 1) limit = 1;
    }
    const int64_t tiles = tx * ty;
    #pragma omp parallel for schedule(static) if (He * We >= LPNX_PARALLEL_MIN)
    for (int64_t t = 0; t < tiles; t++) {
        int32_t *h = hist + t * bins;
        float *map = lut + t * bins;
        memset(h, 0, (size_t)bins * sizeof *h);
        const int64_t y0 = (t / tx) * th, x0 = (t % tx) * tw;
        for (int64_t y = y0; y < y0 + th; y++) {
            const float *row = inp + (y < H ? y : lpnx_image_reflect101(y, H)) * W;
            for (int64_t x = x0; x < x0 + tw; x++)
                h[bin_of(row[x < W ? x : lpnx_image_reflect101(x, W)], bins)]++;
        }
        if (limit > 0) clip_histogram(h, bins, limit);
        int64_t sum = 0;
        for (int64_t i = 0; i < bins; i++) {
            sum += h[i];
            map[i] = (float)((double)sum / (double)total);
        }
    }
    /* Blend the four maps around each pixel, in float as OpenCV does;
     * a + t (b - a) keeps equal maps exact, and the clamp keeps float
     * rounding from stepping outside [0, 1]. */
    const float inv_th = 1.0f / (float)th, inv_tw = 1.0f / (float)tw;
    #pragma omp parallel for schedule(static) if (H * W >= LPNX_PARALLEL_MIN / 4)
    for (int64_t y = 0; y < H; y++) {
        const float tyf = (float)y * inv_th - 0.5f;
        int64_t ty1 = (int64_t)floorf(tyf), ty2 = ty1 + 1;
        const float ya = tyf - (float)ty1;
        if (ty1 < 0) ty1 = 0;
        if (ty2 > ty - 1) ty2 = ty - 1;
        const float *lut1 = lut + ty1 * tx * bins, *lut2 = lut + ty2 * tx * bins;
        const float *in = inp + y * W;
        float *res = out + y * W;
        for (int64_t x = 0; x < W; x++) {
            const float txf = (float)x * inv_tw - 0.5f;
            int64_t tx1 = (int64_t)floorf(txf), tx2 = tx1 + 1;
            const float xa = txf - (float)tx1;
            if (tx1 < 0) tx1 = 0;
            if (tx2 > tx - 1) tx2 = tx - 1;
            const int64_t b = bin_of(in[x], bins), i1 = tx1 * bins + b, i2 = tx2 * bins + b;
            const float top = lut1[i1] + xa * (lut1[i2] - lut1[i1]);
            const float bottom = lut2[i1] + xa * (lut2[i2] - lut2[i1]);
            res[x] = clamp01(top + ya * (bottom - top));
        }
    }
}
