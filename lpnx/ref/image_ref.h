/* Slow, obviously-correct oracles of the image kernels (image/image.h):
 * one output value at a time, in double, straight from the definitions.
 * Test use only. Same layouts as the fast kernels; the ones that need
 * scratch memory allocate it and return LPNX_ENOMEM when they cannot. */
#ifndef LPNX_IMAGE_REF_H
#define LPNX_IMAGE_REF_H

#include <stdint.h>

#include "../image/image.h"

/* out (planes,Ho,Wo) from inp (planes,H,W): PyTorch's nearest
 * (src = min(floor(dst * in/out), in - 1) with a float scale), bilinear
 * (align_corners=false) or area (adaptive average pooling). */
void lpnx_ref_image_resize(float *out, const float *inp, int64_t planes, int64_t H, int64_t W,
                           int64_t Ho, int64_t Wo, lpnx_resize_mode mode);

/* Shift-scale-rotate written as the inverse of the forward map:
 * p = c + R(-angle) (p' - c - (dx*W, dy*H)) / scale per output pixel. */
void lpnx_ref_image_affine(float *out, const float *inp, int64_t planes, int64_t H, int64_t W,
                           double angle_degrees, double scale, double dx, double dy, double cx, double cy,
                           lpnx_sampling s);

/* out (x, y) = inp sampled at (x + field[0][y][x], y + field[1][y][x]). */
void lpnx_ref_image_remap(float *out, const float *inp, const float *field, int64_t planes,
                          int64_t H, int64_t W, lpnx_sampling s);

/* The 2-D Gaussian (outer product of the 1-D one) summed directly over
 * reflect-101 neighbours, in double. */
lpnx_status lpnx_ref_image_gaussian_blur(float *out, const float *inp, int64_t planes, int64_t H, int64_t W,
                                         double sigma);

/* The same draws as lpnx_image_elastic_field, blurred by the oracle. */
lpnx_status lpnx_ref_image_elastic_field(float *field, lpnx_rng *g, int64_t H, int64_t W,
                                         double alpha, double sigma);

/* CLAHE following OpenCV step by step on an explicitly extended copy of
 * the plane, blending the four tile maps with double weights. */
lpnx_status lpnx_ref_image_clahe(float *out, const float *inp, int64_t H, int64_t W, lpnx_clahe_opts o);

/* Components by flood fill from each unlabelled foreground pixel in raster
 * order. areas: (H*W), the first K entries written. Returns K, or -1
 * when the fill stack cannot be allocated. */
int64_t lpnx_ref_image_components(float *labels, int32_t *areas, const float *mask, int64_t H, int64_t W,
                                  int connectivity);
lpnx_status lpnx_ref_image_remove_small(float *out, const float *mask, int64_t H, int64_t W,
                                        int connectivity, int64_t min_area);

/* The overlay with the contour test written out: a mask pixel is on the
 * contour when some position within city-block distance contour_width is
 * outside the mask or the image. */
void lpnx_ref_image_overlay(float *out, const float *image, int64_t channels, const float *mask,
                            int64_t H, int64_t W, const lpnx_overlay_opts *o);

#endif
