/* Image operations for chest X-ray preprocessing, augmentation and review:
 * resizing, flips, shift-scale-rotate, elastic warps, Gaussian blur, CLAHE,
 * intensity changes, connected components and review overlays. Plain C on
 * contiguous float planes, no Lua. An image is a stack of `planes` planes
 * of (H,W) floats, row-major; (C,H,W) and (N,C,H,W) tensors are N*C planes.
 * Callers (the bindings) check shapes and arguments first; no kernel
 * allocates unless it says so, and none fails otherwise.
 *
 * Geometry: pixel (row i, column j), 0-based, has its centre at x = j,
 * y = i (OpenCV's convention); x grows to the right, y downwards. */
#ifndef LPNX_IMAGE_H
#define LPNX_IMAGE_H

#include <stdint.h>

#include "../ops/ops.h"
#include "../tensor.h"

/* ---- sampling, shared by affine and remap (augment.c) --------------- */

typedef enum { LPNX_SAMPLE_BILINEAR, LPNX_SAMPLE_NEAREST } lpnx_sample_mode;

/* What a sample outside the image reads: value (constant), the nearest
 * edge pixel (replicate), or the mirror without repeating the edge pixel,
 * gfedcb|abcdefgh|gfedcba (reflect, OpenCV's BORDER_REFLECT_101). */
typedef enum { LPNX_BORDER_CONSTANT, LPNX_BORDER_REPLICATE, LPNX_BORDER_REFLECT } lpnx_border;

typedef struct {
    lpnx_sample_mode mode;
    lpnx_border border;
    float value; /* read outside the image when border is constant */
} lpnx_sampling;

/* An index i of an axis of n >= 1 positions mirrored into [0, n) as in
 * BORDER_REFLECT_101 (repeatedly, for any i). */
int64_t lpnx_image_reflect101(int64_t i, int64_t n);

/* One sample of the plane p (H,W) at the real position (x, y):
 * bilinear from the four pixels around it (taps of weight 0 are not read),
 * or nearest, the pixel floor(x + 0.5), floor(y + 0.5). */
float lpnx_image_sample(const float *p, int64_t H, int64_t W, double x, double y, lpnx_sampling s);

/* ---- resize.c -------------------------------------------------------- */

/* Resampling modes of lpnx.image.resize: nearest and bilinear are the
 * upsample kernels of ops/layers.h, area is lpnx_image_resize_area. */
typedef enum { LPNX_RESIZE_NEAREST, LPNX_RESIZE_BILINEAR, LPNX_RESIZE_AREA } lpnx_resize_mode;

/* PyTorch's F.interpolate(mode="area") = adaptive_avg_pool2d: output
 * (oh, ow) is the mean of input rows [floor(oh*H/Ho), ceil((oh+1)*H/Ho))
 * and the like columns, summed in float in row order and divided by the
 * window height, then by its width, as PyTorch 1.13 does; a 1x1 output
 * is the plane's mean summed in double (PyTorch's mean()). Any sizes >= 1.
 * out: (planes,Ho,Wo); inp: (planes,H,W). */
void lpnx_image_resize_area(float *out, const float *inp, int64_t planes,
                            int64_t H, int64_t W, int64_t Ho, int64_t Wo);

/* Mirror images: hflip reverses each row (left-right), vflip the order of
 * the rows (top-bottom). out, inp: (planes,H,W). */
void lpnx_image_hflip(float *out, const float *inp, int64_t planes, int64_t H, int64_t W);
void lpnx_image_vflip(float *out, const float *inp, int64_t planes, int64_t H, int64_t W);

/* ---- augment.c: geometry --------------------------------------------- */

/* The map from output to input positions of a shift-scale-rotate, as the
 * 2x3 matrix m: output (x, y) samples the input at
 * (m[0]x + m[1]y + m[2], m[3]x + m[4]y + m[5]).
 *
 * The forward transform is albumentations' ShiftScaleRotate, i.e.
 * cv2.getRotationMatrix2D(center, angle, scale) plus the shift:
 *   p' = scale * R(angle) (p - c) + c + (dx*W, dy*H),
 *   R(a) = [cos a, sin a; -sin a, cos a],
 * counter-clockwise on the screen for positive angles (y points down).
 * The output takes each pixel from p = c + R(-angle) (p' - c - shift) / scale.
 * Positions are in the pixel-centre convention above; the binding's
 * default centre c = ((W - 1) / 2, (H - 1) / 2) is the middle of the
 * image, so a 90-degree turn of a square image permutes its pixels exactly
 * (cv2.getRotationMatrix2D((W/2, H/2), ...), as older albumentations call
 * it, turns about a point half a pixel off the middle). Multiples of 90
 * degrees use exact cosines and sines. */
void lpnx_image_affine_matrix(double m[6], double angle_degrees, double scale,
                              double dx, double dy, double cx, double cy, int64_t H, int64_t W);

/* out (planes,H,W): every output pixel sampled from inp (planes,H,W) at
 * the position m gives it (lpnx_image_affine_matrix). */
void lpnx_image_affine(float *out, const float *inp, int64_t planes, int64_t H, int64_t W,
                       const double m[6], lpnx_sampling s);

/* out (planes,H,W): output (x, y) sampled from inp (planes,H,W) at
 * (x + field[0][y][x], y + field[1][y][x]); field (2,H,W) is shared by
 * every plane. */
void lpnx_image_remap(float *out, const float *inp, const float *field, int64_t planes,
                      int64_t H, int64_t W, lpnx_sampling s);

/* ---- augment.c: filters ---------------------------------------------- */

/* Radius of the Gaussian kernel for sigma, OpenCV's choice for float
 * images: size round(8 sigma + 1) made odd, radius = size / 2 (0 for
 * sigma 0). */
int64_t lpnx_image_gaussian_radius(double sigma);
/* w (2r+1): exp(-k^2 / (2 sigma^2)) for k = -r..r, normalised to sum 1 in
 * double; a lone 1 for r = 0. */
void lpnx_image_gaussian_kernel(float *w, int64_t r, double sigma);

/* Separable Gaussian blur with a reflect (BORDER_REFLECT_101) border:
 * rows of inp into tmp, then columns of tmp into out. out may be inp.
 * Sums in float, as OpenCV's float path does. Allocates the kernel and
 * two index tables (small); LPNX_ENOMEM when that fails, out untouched.
 * out, tmp, inp: (planes,H,W). */
lpnx_status lpnx_image_gaussian_blur(float *out, float *tmp, const float *inp, int64_t planes,
                                     int64_t H, int64_t W, double sigma);

/* An elastic displacement field (2,H,W): plane 0 dx, plane 1 dy, each
 * H*W uniform(-1, 1) draws from g (dx first, row-major), blurred with
 * sigma (lpnx_image_gaussian_blur, skipped for sigma 0) and times alpha
 * (albumentations' ElasticTransform field). tmp: (2,H,W) scratch. The
 * draws use g even when the blur fails with LPNX_ENOMEM. */
lpnx_status lpnx_image_elastic_field(float *field, float *tmp, lpnx_rng *g, int64_t H, int64_t W,
                                     double alpha, double sigma);

/* ---- augment.c: intensity -------------------------------------------- */

/* out = clamp(inp * (1 + contrast) + brightness, 0, 1) over n values, in
 * float (albumentations' RandomBrightnessContrast for float images with
 * brightness_by_max). NaN stays NaN. */
void lpnx_image_brightness_contrast(float *out, const float *inp, size_t n, float brightness,
                                    float contrast);
/* out = clamp(inp, 0, 1) ^ g over n values; g > 0. NaN stays NaN. */
void lpnx_image_gamma(float *out, const float *inp, size_t n, float g);
/* out = inp + N(0, std), the normal draws taken from g in order. */
void lpnx_image_gaussian_noise(float *out, const float *inp, size_t n, float std, lpnx_rng *g);
/* out[b][c] = (inp[b][c] - mean[c]) / std[c] over N batches of C planes of
 * hw values; mean, std: (C). */
void lpnx_image_normalize(float *out, const float *inp, int64_t N, int64_t C, int64_t hw,
                          const float *mean, const float *std);
/* out (N,3,hw): each single plane of inp (N,1,hw) three times. */
void lpnx_image_to_rgb(float *out, const float *inp, int64_t N, int64_t hw);

/* ---- augment.c: CLAHE ------------------------------------------------ */

typedef struct {
    double clip;             /* relative clip limit; <= 0: no clipping */
    int64_t tiles_x, tiles_y; /* tile grid: columns, rows (OpenCV's tileGridSize) */
    int64_t bins;            /* histogram bins over [0, 1] */
} lpnx_clahe_opts;

/* Contrast-limited adaptive histogram equalisation of one (H,W) plane in
 * [0, 1], OpenCV's algorithm (imgproc/src/clahe.cpp) in float:
 * - a value x falls in bin min(floor(x * bins), bins - 1) (0 below 0 or
 *   NaN), so 8-bit values v/255 land in bin v for 256 bins;
 * - when H or W is not a multiple of the grid, the plane is extended at
 *   the bottom and right with reflect-101 by tiles_y - H % tiles_y rows
 *   and tiles_x - W % tiles_x columns (both, as OpenCV does, even when one
 *   of them divides), and split into tiles of th = He/tiles_y by
 *   tw = We/tiles_x pixels;
 * - each tile's histogram is clipped at max((int)(clip * th*tw / bins), 1),
 *   the excess spread evenly over all bins and its remainder one by one at
 *   a stride of max(bins / remainder, 1) from bin 0;
 * - the tile's map is its cumulative histogram / (th*tw), in [0, 1] (not
 *   rounded to 8 bits);
 * - pixel (y, x) blends the maps of the four tiles around it, bilinearly
 *   in the tile coordinates (x / tw - 0.5, y / th - 0.5), in float, so
 *   the map of tile (i, j) is used alone at pixel ((j + 0.5) tw,
 *   (i + 0.5) th) and the edge tiles' maps alone beyond them.
 * lut: (tiles_y*tiles_x, bins) and hist: (tiles_y*tiles_x, bins) scratch;
 * out, inp: (H,W). H, W >= 1. */
void lpnx_image_clahe(float *out, float *lut, int32_t *hist, const float *inp, int64_t H, int64_t W,
                      lpnx_clahe_opts o);

/* ---- components.c ---------------------------------------------------- */

/* Connected components of the foreground (mask > 0.5) of one (H,W) plane
 * with 4- or 8-connectivity: labels (H,W) gets 0 for background and 1..K
 * numbered in raster order of each component's first pixel. Union-find
 * over pixel indices, linking to the smaller root, so every root is its
 * component's first pixel; O(H*W). scratch: (H*W) int32; on return its
 * first K entries hold the areas of components 1..K. Returns K. Needs
 * H*W < 2^31 and at most 2^24 components for exact labels. */
int64_t lpnx_image_components(float *labels, int32_t *scratch, const float *mask, int64_t H, int64_t W,
                              int connectivity);

/* out (H,W): 1 where mask > 0.5 in a component of at least min_area
 * pixels, else 0. scratch: (H*W) int32. */
void lpnx_image_remove_small(float *out, int32_t *scratch, const float *mask, int64_t H, int64_t W,
                             int connectivity, int64_t min_area);

/* ---- overlay.c ------------------------------------------------------- */

typedef struct {
    float color[3];         /* fill colour, RGB */
    float alpha;            /* fill opacity in [0, 1] */
    int contour;            /* paint the contour */
    float contour_color[3]; /* its colour, RGB */
    int64_t contour_width;  /* >= 1 */
} lpnx_overlay_opts;

/* A review image out (3,H,W) in [0, 1]: image (channels,H,W), channels 1
 * (grey, replicated) or 3, clamped to [0, 1]; where mask (H,W) > 0.5,
 * (1 - alpha) * image + alpha * color; with contour, the mask pixels
 * within city-block distance contour_width of a pixel outside the mask
 * (the outside of the image counts as outside) take contour_color. For
 * width 1 these are the mask pixels with a 4-neighbour outside the mask.
 * dist: (H,W) int32 scratch (the distance transform). */
void lpnx_image_overlay(float *out, int32_t *dist, const float *image, int64_t channels,
                        const float *mask, int64_t H, int64_t W, const lpnx_overlay_opts *o);

#endif
