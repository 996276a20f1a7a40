/* Anti-aliased drawing on single-channel float images (H,W), for the
 * synthetic radiographs: filled polygons, strokes along polylines with a
 * flat, tube or hollow-tube (bone) profile, and fractal value noise.
 * Coordinates are in pixels, (0,0) the centre of the top-left pixel. */
#ifndef LPNX_DRAW_H
#define LPNX_DRAW_H

#include <stddef.h>

#include "../ops/ops.h"

typedef enum {
    LPNX_DRAW_SET, /* img = img*(1-c) + value*c */
    LPNX_DRAW_ADD, /* img += value*c */
    LPNX_DRAW_MAX, /* img = max(img, value*c) */
    LPNX_DRAW_MUL  /* img *= 1 + (value-1)*c */
} lpnx_draw_mode;

/* c = coverage in [0,1]. A polygon's coverage rises from 0 to 1 across
 * `feather` pixels centred on its outline (even-odd rule inside).
 * scratch holds H*W floats. */
void lpnx_draw_polygon(float *img, float *scratch, int H, int W, const double *xs, const double *ys, int n,
                       float value, float feather, lpnx_draw_mode mode);

typedef enum {
    LPNX_PROFILE_FLAT, /* constant across the stroke */
    LPNX_PROFILE_TUBE, /* sqrt(1 - (d/r)^2): a solid cylinder's projected thickness */
    LPNX_PROFILE_SHELL /* a hollow cylinder (inner radius inner*r): bright edges, as cortical bone */
} lpnx_draw_profile;

/* A stroke of `width` pixels along the open polyline (xs, ys); its value
 * at distance d from the line follows the profile, with `feather` pixels
 * of soft edge. scratch holds H*W floats (the nearest distance per pixel). */
void lpnx_draw_stroke(float *img, float *scratch, int H, int W, const double *xs, const double *ys,
                      int n, float width, float value, float feather, lpnx_draw_profile profile,
                      float inner, lpnx_draw_mode mode);

/* Fractal value noise in about [-1, 1]: `octaves` layers of bilinearly
 * interpolated random lattices, the first with cells of `scale` pixels,
 * each next one half the cell size and `persistence` times the amplitude. */
void lpnx_draw_noise(float *out, int H, int W, float scale, int octaves, float persistence, lpnx_rng *g);

#endif
