/* Connected components of binary masks, and removal of the small ones.
 * One pass of union-find over pixel indices (each foreground pixel is
 * joined with its already-visited neighbours: left and up for
 * 4-connectivity, plus up-left and up-right for 8), then one pass that
 * numbers the roots in raster order. Sequential: the passes are O(H*W)
 * with a tiny constant. */
#include "image.h"

static inline int is_fg(float v) { return v > 0.5f; }

/* Root of i with path halving; parent holds -1 for background. */
static inline int32_t find(int32_t *parent, int32_t i) {
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    return i;
}

/* Joins the sets of a and b under the smaller root, so a root is always
 * the first pixel of its set in raster order. */
static inline void unite(int32_t *parent, int32_t a, int32_t b) {
    a = find(parent, a);
    b = find(parent, b);
    if (a < b) parent[b] = a;
    else if (b < a) parent[a] = b;
}

int64_t lpnx_image_components(float *labels, int32_t *scratch, const float *mask, int64_t H, int64_t W,
                              int connectivity) {
    /* labels, mask: (H,W); scratch: (H*W) parent table, then the areas */
    int32_t *parent = scratch;
    for (int64_t y = 0; y < H; y++) {
        for (int64_t x = 0; x < W; x++) {
            const int32_t i = (int32_t)(y * W + x);
            if (!is_fg(mask[i])) {
                parent[i] = -1;
                continue;
            }
            parent[i] = i;
            if (x > 0 && parent[i - 1] >= 0) unite(parent, i, i - 1);
            if (y == 0) continue;
            const int32_t up = i - (int32_t)W;
            if (parent[up] >= 0) unite(parent, i, up);
            if (connectivity == 8) {
                if (x > 0 && parent[up - 1] >= 0) unite(parent, i, up - 1);
                if (x + 1 < W && parent[up + 1] >= 0) unite(parent, i, up + 1);
            }
        }
    }
    const int64_t n = H * W;
    int64_t K = 0;
    for (int64_t i = 0; i < n; i++) {
        if (parent[i] < 0) {
            labels[i] = 0;
            continue;
        }
        const int32_t r = find(parent, (int32_t)i);
        labels[i] = r == i ? (float)++K : labels[r]; /* the root came first */
    }
    /* The parent table is spent: count the areas into its first K slots. */
    for (int64_t k = 0; k < K; k++) scratch[k] = 0;
    for (int64_t i = 0; i < n; i++)
        if (labels[i] > 0) scratch[(int64_t)labels[i] - 1]++;
    return K;
}

void lpnx_image_remove_small(float *out, int32_t *scratch, const float *mask, int64_t H, int64_t W,
                             int connectivity, int64_t min_area) {
    /* out, mask: (H,W); scratch: (H*W) */
    lpnx_image_components(out, scratch, mask, H, W, connectivity);
    const int64_t n = H * W;
    for (int64_t i = 0; i < n; i++) {
        const int64_t label = (int64_t)out[i];
        out[i] = label > 0 && scratch[label - 1] >= min_area ? 1.0f : 0.0f;
    }
}
