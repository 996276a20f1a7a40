/* Groups of images (conv_groups.c): the schedule the convolutions share.
 * Plain C on sizes: no Lua, no allocation, no failure paths. */
#ifndef LPNX_CONV_GROUPS_H
#define LPNX_CONV_GROUPS_H

#include <stddef.h>
#include <stdint.h>

/* ---- groups of images ------------------------------------------------
 * The images 0..n-1 of a batch are split into the images at even places
 * and those at odd places (LPNX_CONV2D_SPLIT_LEVELS times over): the
 * groups, in that tree's depth-first order. Each group is computed on its
 * own, in units of a few of its images (or pieces of one) in order, with
 * a weight gradient part of its own; the parts are added in the tree. A
 * process that holds every other image of a batch
 * (batch_parts 2) skips the split: its one group is a
 * group of the whole batch, computed alike, and the two processes' sum
 * is the one process's. */
#define LPNX_CONV2D_SPLIT_LEVELS 1

typedef struct {
    int64_t first, stride, count; /* images first, first + stride, ... (count of them) */
} lpnx_conv2d_group;

/* The groups of n images into out (room for 1 << LPNX_CONV2D_SPLIT_LEVELS),
 * in depth-first order, when parts processes share the batch (0 or 1:
 * none; else a power of two); returns how many. out may be NULL to count
 * them. */
int64_t lpnx_conv2d_groups(lpnx_conv2d_group *out, int64_t n, int64_t parts);

/* dst[i] += the sum over the n groups k of parts[k*len + i], added in the
 * groups' tree of lpnx_conv2d_groups(.., batch_parts) (parts is
 * overwritten). */
void lpnx_conv2d_sum_groups(float *dst, float *parts, int64_t n, size_t len, int64_t batch_parts);

/* A group's units: runs of up to c of its images, or, when per > 1, its
 * images one by one, each in per pieces. The units of all the groups are
 * numbered group after group; unit u is group *k's images *j0 .. *j0 +
 * *nn - 1 (places in the group), piece *piece (0 when per == 1). */
int64_t lpnx_conv2d_units(const lpnx_conv2d_group *groups, int64_t count, int64_t c, int64_t per);
void lpnx_conv2d_unit(const lpnx_conv2d_group *groups, int64_t count, int64_t c, int64_t per, int64_t u,
                      int64_t *k, int64_t *j0, int64_t *nn, int64_t *piece);

#endif
