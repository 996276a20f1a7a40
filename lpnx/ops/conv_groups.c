/* Groups of images: how the convolutions (conv2d.c, winograd.c) cut a
 * batch so that its sums never depend on the thread count or on how many
 * processes share the batch (conv_groups.h). Plain C, no policy: the
 * caller says how many processes share the batch. */
#include <stddef.h>
#include <stdint.h>

#include "conv_groups.h"
#include "ops.h"

/* The levels of the tree already split off by the processes sharing the
 * batch: log2 of parts (parts <= 1: none). */
static int held_levels(int64_t parts) {
    int levels = 0;
    while (parts > 1) {
        parts /= 2;
        levels++;
    }
    return levels;
}

/* Whether a list of count images at this level of the tree splits. */
static int splits(int64_t count, int level) { return count >= 2 && level < LPNX_CONV2D_SPLIT_LEVELS; }

static void add_groups(lpnx_conv2d_group *out, int64_t *k, int64_t first, int64_t stride, int64_t count,
                       int level) {
    if (splits(count, level)) {
        add_groups(out, k, first, 2 * stride, (count + 1) / 2, level + 1);
        add_groups(out, k, first + stride, 2 * stride, count / 2, level + 1);
        return;
    }
    if (out) out[*k] = (lpnx_conv2d_group){first, stride, count};
    (*k)++;
}

int64_t lpnx_conv2d_groups(lpnx_conv2d_group *out, int64_t n, int64_t parts) {
    int64_t k = 0;
    if (n > 0) add_groups(out, &k, 0, 1, n, held_levels(parts));
    return k;
}

/* dst += src, len floats. */
static void add_into(float *dst, const float *src, size_t len) {
    const int64_t n = (int64_t)len;
#pragma omp parallel for schedule(static) if (n >= LPNX_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

/* The sum of a subtree's parts into its first part; returns its index.
 * *k: the next group's part. */
static int64_t sum_tree(float *parts, size_t len, int64_t *k, int64_t count, int level) {
    if (!splits(count, level)) return (*k)++;
    const int64_t even = sum_tree(parts, len, k, (count + 1) / 2, level + 1);
    const int64_t odd = sum_tree(parts, len, k, count / 2, level + 1);
    add_into(parts + (size_t)even * len, parts + (size_t)odd * len, len);
    return even;
}

void lpnx_conv2d_sum_groups(float *dst, float *parts, int64_t n, size_t len, int64_t batch_parts) {
    if (n <= 0) return;
    int64_t k = 0;
    const int level = held_levels(batch_parts);
    if (!splits(n, level)) {
        add_into(dst, parts, len);
        return;
    }
    /* the top split's two sums, added into dst in one pass: dst + (even + odd) */
    const float *even = parts + (size_t)sum_tree(parts, len, &k, (n + 1) / 2, level + 1) * len;
    const float *odd = parts + (size_t)sum_tree(parts, len, &k, n / 2, level + 1) * len;
    const int64_t count = (int64_t)len;
#pragma omp parallel for schedule(static) if (count >= LPNX_PARALLEL_MIN)
    for (int64_t i = 0; i < count; i++) dst[i] += even[i] + odd[i];
}

static int64_t group_units(const lpnx_conv2d_group *grp, int64_t c, int64_t per) {
    return per > 1 ? grp->count * per : (grp->count + c - 1) / c;
}

int64_t lpnx_conv2d_units(const lpnx_conv2d_group *groups, int64_t count, int64_t c, int64_t per) {
    int64_t u = 0;
    for (int64_t k = 0; k < count; k++) u += group_units(&groups[k], c, per);
    return u;
}

void lpnx_conv2d_unit(const lpnx_conv2d_group *groups, int64_t count, int64_t c, int64_t per, int64_t u,
                      int64_t *k, int64_t *j0, int64_t *nn, int64_t *piece) {
    int64_t g = 0;
    while (g + 1 < count && u >= group_units(&groups[g], c, per)) u -= group_units(&groups[g++], c, per);
    *k = g;
    if (per > 1) {
        *j0 = u / per;
        *nn = 1;
        *piece = u % per;
    } else {
        *j0 = u * c;
        *nn = groups[g].count - *j0 < c ? groups[g].count - *j0 : c;
        *piece = 0;
    }
}
