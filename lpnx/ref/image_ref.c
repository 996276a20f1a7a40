/* Oracles of the image kernels: each output value computed on its own from
 * the definition, in double, with no tables, no threads and no shortcuts. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "image_ref.h"

/* ---- resize ---------------------------------------------------------- */

void lpnx_ref_image_resize(float *out, const float *inp, int64_t planes, int64_t H, int64_t W,
                           int64_t Ho, int64_t Wo, lpnx_resize_mode mode) {
    const float sh = (float)H / (float)Ho, sw = (float)W / (float)Wo; /* PyTorch's float scales */
    for (int64_t p = 0; p < planes; p++) {
        const float *in = inp + p * H * W;
        for (int64_t oh = 0; oh < Ho; oh++) {
            for (int64_t ow = 0; ow < Wo; ow++) {
                double v = 0;
                if (mode == LPNX_RESIZE_NEAREST) {
                    int64_t ih = (int64_t)floorf((float)oh * sh), iw = (int64_t)floorf((float)ow * sw);
                    if (ih > H - 1) ih = H - 1;
                    if (iw > W - 1) iw = W - 1;
                    v = in[ih * W + iw];
                } else if (mode == LPNX_RESIZE_BILINEAR) {
                    /* the source position of the output pixel centre */
                    double y = H == Ho ? (double)oh : fmax(((double)oh + 0.5) * sh - 0.5, 0.0);
                    double x = W == Wo ? (double)ow : fmax(((double)ow + 0.5) * sw - 0.5, 0.0);
                    int64_t y0 = (int64_t)floor(y), x0 = (int64_t)floor(x);
                    if (y0 > H - 1) y0 = H - 1;
                    if (x0 > W - 1) x0 = W - 1;
                    const int64_t y1 = y0 + 1 < H ? y0 + 1 : y0, x1 = x0 + 1 < W ? x0 + 1 : x0;
                    const double ly = y - (double)y0, lx = x - (double)x0;
                    v = (1 - ly) * ((1 - lx) * in[y0 * W + x0] + lx * in[y0 * W + x1]) +
                        ly * ((1 - lx) * in[y1 * W + x0] + lx * in[y1 * W + x1]);
                } else {
                    const int64_t h0 = (int64_t)floor((double)oh * (double)H / (double)Ho);
                    const int64_t h1 = (int64_t)ceil((double)(oh + 1) * (double)H / (double)Ho);
                    const int64_t w0 = (int64_t)floor((double)ow * (double)W / (double)Wo);
                    const int64_t w1 = (int64_t)ceil((double)(ow + 1) * (double)W / (double)Wo);
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++) v += in[ih * W + iw];
                    v /= (double)((h1 - h0) * (w1 - w0));
                }
                out[(p * Ho + oh) * Wo + ow] = (float)v;
            }
        }
    }
}

/* ---- sampling -------------------------------------------------------- */

/* An index outside [0, n) folded back by mirroring about the end pixels. */
static int64_t mirror(int64_t i, int64_t n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) {
        if (i < 0) i = -i;
        if (i >= n) i = 2 * (n - 1) - i;
    }
    return i;
}

static double pixel(const float *p, int64_t H, int64_t W, int64_t x, int64_t y, lpnx_sampling s) {
    if (x < 0 || x >= W || y < 0 || y >= H) {
        if (s.border == LPNX_BORDER_CONSTANT) return s.value;
        if (s.border == LPNX_BORDER_REPLICATE) {
            x = x < 0 ? 0 : x >= W ? W - 1 : x;
            y = y < 0 ? 0 : y >= H ? H - 1 : y;
        } else {
            x = mirror(x, W);
            y = mirror(y, H);
        }
    }
    return p[y * W + x];
}

/* Bilinear: all four neighbours with their weights; nearest: round half up. */
static float sample(const float *p, int64_t H, int64_t W, double x, double y, lpnx_sampling s) {
    if (!(fabs(x) < 1e9)) x = -1e9;
    if (!(fabs(y) < 1e9)) y = -1e9;
    if (s.mode == LPNX_SAMPLE_NEAREST) return (float)pixel(p, H, W, (int64_t)floor(x + 0.5), (int64_t)floor(y + 0.5), s);
    const int64_t x0 = (int64_t)floor(x), y0 = (int64_t)floor(y);
    const double ax = x - (double)x0, ay = y - (double)y0;
    const double v = (1 - ax) * (1 - ay) * pixel(p, H, W, x0, y0, s) + ax * (1 - ay) * pixel(p, H, W, x0 + 1, y0, s) +
                     (1 - ax) * ay * pixel(p, H, W, x0, y0 + 1, s) + ax * ay * pixel(p, H, W, x0 + 1, y0 + 1, s);
    return (float)v;
}

/* Values this close to 0 or +-1 are taken as exact. */
static double snap(double v) {
    if (fabs(v) < 1e-12) return 0;
    if (fabs(v - 1) < 1e-12) return 1;
    if (fabs(v + 1) < 1e-12) return -1;
    return v;
}

void lpnx_ref_image_affine(float *out, const float *inp, int64_t planes, int64_t H, int64_t W,
                           double angle_degrees, double scale, double dx, double dy, double cx, double cy,
                           lpnx_sampling s) {
    const double a = angle_degrees * acos(-1.0) / 180.0, c = snap(cos(a)), sn = snap(sin(a));
    for (int64_t p = 0; p < planes; p++)
        for (int64_t y = 0; y < H; y++)
            for (int64_t x = 0; x < W; x++) {
                /* undo the shift, the rotation about c and the scale */
                const double vx = ((double)x - cx - dx * (double)W) / scale;
                const double vy = ((double)y - cy - dy * (double)H) / scale;
                const double sx = cx + c * vx - sn * vy, sy = cy + sn * vx + c * vy;
                out[(p * H + y) * W + x] = sample(inp + p * H * W, H, W, sx, sy, s);
            }
}

void lpnx_ref_image_remap(float *out, const float *inp, const float *field, int64_t planes,
                          int64_t H, int64_t W, lpnx_sampling s) {
    for (int64_t p = 0; p < planes; p++)
        for (int64_t y = 0; y < H; y++)
            for (int64_t x = 0; x < W; x++) {
                const double sx = (double)x + field[y * W + x], sy = (double)y + field[H * W + y * W + x];
                out[(p * H + y) * W + x] = sample(inp + p * H * W, H, W, sx, sy, s);
            }
}

/* ---- blur and elastic fields ----------------------------------------- */

lpnx_status lpnx_ref_image_gaussian_blur(float *out, const float *inp, int64_t planes, int64_t H, int64_t W,
                                         double sigma) {
    const int64_t r = sigma > 0 ? ((int64_t)floor(8 * sigma + 1 + 0.5) | 1) / 2 : 0;
    double *w = malloc((size_t)(2 * r + 1) * sizeof *w); /* (2r+1): w[r + k] for k = -r..r */
    if (!w) return LPNX_ENOMEM;
    double sum = 0;
    for (int64_t k = -r; k <= r; k++) sum += w[r + k] = r ? exp(-(double)(k * k) / (2 * sigma * sigma)) : 1;
    for (int64_t k = -r; k <= r; k++) w[r + k] /= sum;
    for (int64_t p = 0; p < planes; p++)
        for (int64_t y = 0; y < H; y++)
            for (int64_t x = 0; x < W; x++) {
                double v = 0;
                for (int64_t i = -r; i <= r; i++)
                    for (int64_t j = -r; j <= r; j++)
                        v += w[r + i] * w[r + j] * inp[(p * H + mirror(y + i, H)) * W + mirror(x + j, W)];
                out[(p * H + y) * W + x] = (float)v;
            }
    free(w);
    return LPNX_OK;
}

lpnx_status lpnx_ref_image_elastic_field(float *field, lpnx_rng *g, int64_t H, int64_t W,
                                         double alpha, double sigma) {
    const size_t n = (size_t)(2 * H * W);
    float *noise = malloc((n ? n : 1) * sizeof *noise); /* (2,H,W) */
    if (!noise) return LPNX_ENOMEM;
    lpnx_rng_fill_uniform(g, noise, n, -1.0f, 1.0f);
    const lpnx_status st = lpnx_ref_image_gaussian_blur(field, noise, 2, H, W, sigma);
    for (size_t i = 0; st == LPNX_OK && i < n; i++) field[i] = (float)((double)field[i] * alpha);
    free(noise);
    return st;
}

/* ---- CLAHE ----------------------------------------------------------- */

lpnx_status lpnx_ref_image_clahe(float *out, const float *inp, int64_t H, int64_t W, lpnx_clahe_opts o) {
    const int64_t TX = o.tiles_x, TY = o.tiles_y, bins = o.bins;
    const int divides = H % TY == 0 && W % TX == 0;
    const int64_t He = divides ? H : H + TY - H % TY, We = divides ? W : W + TX - W % TX;
    const int64_t th = He / TY, tw = We / TX, total = th * tw;
    float *ext = malloc((size_t)(He * We) * sizeof *ext);          /* (He,We) */
    int64_t *hist = malloc((size_t)bins * sizeof *hist);            /* (bins) */
    double *map = malloc((size_t)(TY * TX * bins) * sizeof *map);   /* (TY,TX,bins) */
    if (!ext || !hist || !map) {
        free(ext);
        free(hist);
        free(map);
        return LPNX_ENOMEM;
    }
    for (int64_t y = 0; y < He; y++)
        for (int64_t x = 0; x < We; x++) ext[y * We + x] = inp[mirror(y, H) * W + mirror(x, W)];
    int64_t limit = 0;
    if (o.clip > 0) {
        const double c = o.clip * (double)total / (double)bins;
        limit = c > (double)total ? total : (int64_t)c;
        if (limit < 1) limit = 1;
    }
    for (int64_t i = 0; i < TY; i++)
        for (int64_t j = 0; j < TX; j++) {
            memset(hist, 0, (size_t)bins * sizeof *hist);
            for (int64_t y = i * th; y < (i + 1) * th; y++)
                for (int64_t x = j * tw; x < (j + 1) * tw; x++) {
                    const float b = ext[y * We + x] * (float)bins; /* the bin rule, in float */
                    hist[!(b > 0) ? 0 : b >= (float)bins ? bins - 1 : (int64_t)floorf(b)]++;
                }
            if (limit > 0) {
                int64_t excess = 0;
                for (int64_t b = 0; b < bins; b++)
                    if (hist[b] > limit) {
                        excess += hist[b] - limit;
                        hist[b] = limit;
                    }
                for (int64_t b = 0; b < bins; b++) hist[b] += excess / bins;
                int64_t left = excess % bins;
                const int64_t step = left ? (bins / left > 1 ? bins / left : 1) : 1;
                for (int64_t b = 0; b < bins && left > 0; b += step, left--) hist[b]++;
            }
            int64_t cdf = 0;
            for (int64_t b = 0; b < bins; b++) {
                cdf += hist[b];
                map[(i * TX + j) * bins + b] = (double)cdf / (double)total;
            }
        }
    for (int64_t y = 0; y < H; y++)
        for (int64_t x = 0; x < W; x++) {
            const float fb = inp[y * W + x] * (float)bins;
            const int64_t b = !(fb > 0) ? 0 : fb >= (float)bins ? bins - 1 : (int64_t)floorf(fb);
            const double ty = (double)y / (double)th - 0.5, tx = (double)x / (double)tw - 0.5;
            const double ty0 = floor(ty), tx0 = floor(tx), ay = ty - ty0, ax = tx - tx0;
            const int64_t i0 = ty0 < 0 ? 0 : (int64_t)ty0, i1 = ty0 + 1 > (double)(TY - 1) ? TY - 1 : (int64_t)ty0 + 1;
            const int64_t j0 = tx0 < 0 ? 0 : (int64_t)tx0, j1 = tx0 + 1 > (double)(TX - 1) ? TX - 1 : (int64_t)tx0 + 1;
            out[y * W + x] = (float)((1 - ay) * (1 - ax) * map[(i0 * TX + j0) * bins + b] +
                                     (1 - ay) * ax * map[(i0 * TX + j1) * bins + b] +
                                     ay * (1 - ax) * map[(i1 * TX + j0) * bins + b] +
                                     ay * ax * map[(i1 * TX + j1) * bins + b]);
        }
    free(ext);
    free(hist);
    free(map);
    return LPNX_OK;
}

/* ---- components ------------------------------------------------------ */

int64_t lpnx_ref_image_components(float *labels, int32_t *areas, const float *mask, int64_t H, int64_t W,
                                  int connectivity) {
    const int64_t n = H * W;
    int64_t *stack = malloc((size_t)(n ? n : 1) * sizeof *stack); /* (H*W) pixels to visit */
    if (!stack) return -1;
    for (int64_t i = 0; i < n; i++) labels[i] = 0;
    int64_t K = 0;
    for (int64_t start = 0; start < n; start++) {
        if (!(mask[start] > 0.5f) || labels[start] != 0) continue;
        K++;
        int64_t top = 0, area = 0;
        stack[top++] = start;
        labels[start] = (float)K;
        while (top > 0) {
            const int64_t i = stack[--top], y = i / W, x = i % W;
            area++;
            for (int64_t dy = -1; dy <= 1; dy++)
                for (int64_t dx = -1; dx <= 1; dx++) {
                    if ((dx == 0 && dy == 0) || (connectivity == 4 && dx != 0 && dy != 0)) continue;
                    const int64_t yy = y + dy, xx = x + dx;
                    if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                    const int64_t j = yy * W + xx;
                    if (mask[j] > 0.5f && labels[j] == 0) {
                        labels[j] = (float)K;
                        stack[top++] = j;
                    }
                }
        }
        areas[K - 1] = (int32_t)area;
    }
    free(stack);
    return K;
}

lpnx_status lpnx_ref_image_remove_small(float *out, const float *mask, int64_t H, int64_t W,
                                        int connectivity, int64_t min_area) {
    const int64_t n = H * W;
    int32_t *areas = malloc((size_t)(n ? n : 1) * sizeof *areas); /* (H*W) */
    if (!areas) return LPNX_ENOMEM;
    if (lpnx_ref_image_components(out, areas, mask, H, W, connectivity) < 0) {
        free(areas);
        return LPNX_ENOMEM;
    }
    for (int64_t i = 0; i < n; i++) {
        const int64_t label = (int64_t)out[i];
        out[i] = label > 0 && areas[label - 1] >= min_area ? 1.0f : 0.0f;
    }
    free(areas);
    return LPNX_OK;
}

/* ---- overlay --------------------------------------------------------- */

void lpnx_ref_image_overlay(float *out, const float *image, int64_t channels, const float *mask,
                            int64_t H, int64_t W, const lpnx_overlay_opts *o) {
    const int64_t n = H * W, w = o->contour_width;
    for (int64_t y = 0; y < H; y++)
        for (int64_t x = 0; x < W; x++) {
            const int inside = mask[y * W + x] > 0.5f;
            int edge = 0;
            for (int64_t dy = -w; inside && o->contour && dy <= w && !edge; dy++)
                for (int64_t dx = -w; dx <= w && !edge; dx++) {
                    if (llabs(dx) + llabs(dy) > w) continue;
                    const int64_t yy = y + dy, xx = x + dx;
                    edge = yy < 0 || yy >= H || xx < 0 || xx >= W || !(mask[yy * W + xx] > 0.5f);
                }
            for (int c = 0; c < 3; c++) {
                double v = image[(channels == 3 ? c : 0) * n + y * W + x];
                v = v < 0 ? 0 : v > 1 ? 1 : v;
                if (edge) v = o->contour_color[c];
                else if (inside) v = (1 - (double)o->alpha) * v + (double)o->alpha * o->color[c];
                out[c * n + y * W + x] = (float)v;
            }
        }
}
