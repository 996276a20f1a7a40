/* Review images: a mask drawn over an X-ray as a translucent fill and an
 * opaque inner contour. The contour comes from an exact city-block
 * distance transform (two raster passes), so any width costs the same. */
#include "image.h"

static inline float clamp01(float v) { return v < 0 ? 0 : v > 1 ? 1 : v; }

/* dist (H,W): for mask pixels, the city-block distance to the nearest
 * pixel outside the mask, where everything beyond the image is outside;
 * 0 elsewhere. Capped at cap. */
static void outside_distance(int32_t *dist, const float *mask, int64_t H, int64_t W, int32_t cap) {
    for (int64_t y = 0; y < H; y++) {
        for (int64_t x = 0; x < W; x++) {
            const int64_t i = y * W + x;
            if (!(mask[i] > 0.5f)) {
                dist[i] = 0;
                continue;
            }
            int32_t d = cap;
            const int32_t up = y > 0 ? dist[i - W] + 1 : 1, left = x > 0 ? dist[i - 1] + 1 : 1;
            if (up < d) d = up;
            if (left < d) d = left;
            dist[i] = d;
        }
    }
    for (int64_t y = H - 1; y >= 0; y--) {
        for (int64_t x = W - 1; x >= 0; x--) {
            const int64_t i = y * W + x;
            if (dist[i] == 0) continue;
            const int32_t down = y + 1 < H ? dist[i + W] + 1 : 1, right = x + 1 < W ? dist[i + 1] + 1 : 1;
            if (down < dist[i]) dist[i] = down;
            if (right < dist[i]) dist[i] = right;
        }
    }
}

void lpnx_image_overlay(float *out, int32_t *dist, const float *image, int64_t channels,
                        const float *mask, int64_t H, int64_t W, const lpnx_overlay_opts *o) {
    /* out: (3,H,W); dist: (H,W); image: (channels,H,W); mask: (H,W) */
    const int64_t n = H * W;
    const int32_t width = o->contour_width > 0x3fffffff ? 0x3fffffff : (int32_t)o->contour_width;
    if (o->contour) outside_distance(dist, mask, H, W, width + 1);
    const float alpha = o->alpha;
    #pragma omp parallel for schedule(static) if (n >= LPNX_PARALLEL_MIN / 4)
    for (int64_t y = 0; y < H; y++) {
        for (int64_t x = 0; x < W; x++) {
            const int64_t i = y * W + x;
            const int inside = mask[i] > 0.5f;
            const int edge = inside && o->contour && dist[i] <= width;
            for (int c = 0; c < 3; c++) {
                float v = clamp01(image[(channels == 3 ? c : 0) * n + i]);
                if (edge) v = o->contour_color[c];
                else if (inside) v = (1 - alpha) * v + alpha * o->color[c];
                out[c * n + i] = v;
            }
        }
    }
}
