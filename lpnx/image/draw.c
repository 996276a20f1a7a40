/* Anti-aliased drawing for the synthetic radiographs (see draw.h). Each
 * shape touches only its bounding box grown by the soft edge. */
#include "draw.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

static inline void apply(float *p, float value, float c, lpnx_draw_mode mode) {
    switch (mode) {
    case LPNX_DRAW_SET: *p = *p * (1 - c) + value * c; break;
    case LPNX_DRAW_ADD: *p += value * c; break;
    case LPNX_DRAW_MAX: if (value * c > *p) *p = value * c; break;
    case LPNX_DRAW_MUL: *p *= 1 + (value - 1) * c; break;
    }
}

/* Distance from (px, py) to the segment (ax, ay)-(bx, by). */
static inline double seg_dist(double px, double py, double ax, double ay, double bx, double by) {
    double vx = bx - ax, vy = by - ay, wx = px - ax, wy = py - ay;
    double len2 = vx * vx + vy * vy;
    double t = len2 > 0 ? (wx * vx + wy * vy) / len2 : 0;
    if (t < 0) t = 0;
    if (t > 1) t = 1;
    double dx = wx - t * vx, dy = wy - t * vy;
    return sqrt(dx * dx + dy * dy);
}

typedef struct { int x0, y0, x1, y1; } box; /* inclusive pixel bounds, empty when x0 > x1 */

static box bounds(const double *xs, const double *ys, int n, double grow, int H, int W) {
    double minx = DBL_MAX, miny = DBL_MAX, maxx = -DBL_MAX, maxy = -DBL_MAX;
    for (int i = 0; i < n; i++) {
        if (xs[i] < minx) minx = xs[i];
        if (xs[i] > maxx) maxx = xs[i];
        if (ys[i] < miny) miny = ys[i];
        if (ys[i] > maxy) maxy = ys[i];
    }
    box b;
    b.x0 = minx - grow < 0 ? 0 : (int)floor(minx - grow);
    b.y0 = miny - grow < 0 ? 0 : (int)floor(miny - grow);
    b.x1 = maxx + grow > W - 1 ? W - 1 : (int)ceil(maxx + grow);
    b.y1 = maxy + grow > H - 1 ? H - 1 : (int)ceil(maxy + grow);
    return b;
}

/* Lowers |dist| to the distance from segment (a, b) for the pixels near
 * it, keeping dist's sign (inside/outside). */
static void segment_distances(float *dist, int H, int W, double ax, double ay, double bx, double by, double reach) {
    double xs[2] = {ax, bx}, ys[2] = {ay, by};
    box b = bounds(xs, ys, 2, reach, H, W);
    for (int y = b.y0; y <= b.y1; y++)
        for (int x = b.x0; x <= b.x1; x++) {
            float d = (float)seg_dist(x, y, ax, ay, bx, by);
            float *p = dist + (size_t)y * W + x;
            if (d < fabsf(*p)) *p = *p < 0 ? -d : d;
        }
}

void lpnx_draw_polygon(float *img, float *dist, int H, int W, const double *xs, const double *ys, int n,
                       float value, float feather, lpnx_draw_mode mode) {
    /* dist: (H,W) scratch, the signed distance to the outline (+ inside) */
    if (n < 3 || H <= 0 || W <= 0) return;
    if (feather < 1e-3f) feather = 1e-3f;
    double half = feather / 2.0;
    box b = bounds(xs, ys, n, half + 1, H, W);
    if (b.x0 > b.x1 || b.y0 > b.y1) return;
    /* even-odd inside test along each pixel row */
    for (int y = b.y0; y <= b.y1; y++) {
        double cross[512];
        int nc = 0;
        for (int i = 0; i < n; i++) {
            int j = (i + 1) % n;
            double y0 = ys[i], y1 = ys[j];
            if ((y0 <= y && y1 > y) || (y1 <= y && y0 > y)) {
                double t = (y - y0) / (y1 - y0);
                if (nc < 512) cross[nc++] = xs[i] + t * (xs[j] - xs[i]);
            }
        }
        for (int i = 1; i < nc; i++) /* insertion sort: few crossings per row */
            for (int k = i; k > 0 && cross[k - 1] > cross[k]; k--) {
                double t = cross[k];
                cross[k] = cross[k - 1];
                cross[k - 1] = t;
            }
        for (int x = b.x0; x <= b.x1; x++) {
            int inside = 0;
            for (int k = 0; k < nc && cross[k] <= x; k++) inside ^= 1;
            dist[(size_t)y * W + x] = inside ? FLT_MAX : -FLT_MAX;
        }
    }
    for (int i = 0; i < n; i++) {
        int j = (i + 1) % n;
        segment_distances(dist, H, W, xs[i], ys[i], xs[j], ys[j], half + 1);
    }
    for (int y = b.y0; y <= b.y1; y++)
        for (int x = b.x0; x <= b.x1; x++) {
            float s = dist[(size_t)y * W + x];
            float c = 0.5f + s / feather;
            if (c <= 0) continue;
            if (c > 1) c = 1;
            apply(img + (size_t)y * W + x, value, c, mode);
        }
}

void lpnx_draw_stroke(float *img, float *scratch, int H, int W, const double *xs, const double *ys,
                      int n, float width, float value, float feather, lpnx_draw_profile profile,
                      float inner, lpnx_draw_mode mode) {
    if (n < 2 || width <= 0 || H <= 0 || W <= 0) return;
    if (feather < 1e-3f) feather = 1e-3f;
    double r = width / 2.0, reach = r + feather + 1;
    box b = bounds(xs, ys, n, reach, H, W);
    if (b.x0 > b.x1 || b.y0 > b.y1) return;
    for (int y = b.y0; y <= b.y1; y++)
        for (int x = b.x0; x <= b.x1; x++) scratch[(size_t)y * W + x] = FLT_MAX;
    for (int i = 0; i + 1 < n; i++) segment_distances(scratch, H, W, xs[i], ys[i], xs[i + 1], ys[i + 1], reach);
    double shell_norm = inner > 0 && inner < 1 ? 1.0 / sqrt(1.0 - (double)inner * inner) : 1.0;
    for (int y = b.y0; y <= b.y1; y++)
        for (int x = b.x0; x <= b.x1; x++) {
            double d = scratch[(size_t)y * W + x];
            double edge = (r - d) / feather + 0.5;
            if (edge <= 0) continue;
            if (edge > 1) edge = 1;
            double q = d / r, p = 1;
            if (profile != LPNX_PROFILE_FLAT) {
                p = q < 1 ? sqrt(1 - q * q) : 0;
                if (profile == LPNX_PROFILE_SHELL) {
                    if (q < inner) p -= sqrt((double)inner * inner - q * q);
                    p *= shell_norm;
                }
                /* keep the anti-aliased rim visible where the profile reaches 0 */
                if (p < 0.15 * edge) p = 0.15 * edge;
            }
            apply(img + (size_t)y * W + x, value, (float)(p * edge), mode);
        }
}

static inline float smooth(float t) { return t * t * (3 - 2 * t); }

void lpnx_draw_noise(float *out, int H, int W, float scale, int octaves, float persistence, lpnx_rng *g) {
    for (size_t i = 0; i < (size_t)H * W; i++) out[i] = 0;
    if (scale < 1) scale = 1;
    float amp = 1, total = 0;
    for (int o = 0; o < octaves; o++, scale /= 2, amp *= persistence) {
        if (scale < 1) break;
        int gh = (int)(H / scale) + 2, gw = (int)(W / scale) + 2;
        float *lattice = malloc((size_t)gh * gw * sizeof(float)); /* (gh,gw) in [-1,1] */
        if (!lattice) break;
        for (size_t i = 0; i < (size_t)gh * gw; i++) lattice[i] = 2 * lpnx_rng_uniform(g) - 1;
        #pragma omp parallel for schedule(static) if ((size_t)H * W >= LPNX_PARALLEL_MIN)
        for (int y = 0; y < H; y++) {
            float fy = y / scale;
            int iy = (int)fy;
            float ty = smooth(fy - iy);
            for (int x = 0; x < W; x++) {
                float fx = x / scale;
                int ix = (int)fx;
                float tx = smooth(fx - ix);
                const float *r0 = lattice + (size_t)iy * gw, *r1 = r0 + gw;
                float top = r0[ix] + (r0[ix + 1] - r0[ix]) * tx;
                float bottom = r1[ix] + (r1[ix + 1] - r1[ix]) * tx;
                out[(size_t)y * W + x] += amp * (top + (bottom - top) * ty);
            }
        }
        total += amp;
        free(lattice);
    }
    if (total > 0)
        for (size_t i = 0; i < (size_t)H * W; i++) out[i] /= total;
}
