/* Run-length encoded binary masks, as used by the SIIM-ACR pneumothorax
 * data and by Kaggle submissions.
 *
 * Pixels of an H x W mask are numbered column by column: index = x*H + y
 * (0-based; top to bottom, then left to right). A string is whitespace
 * separated pairs of whole numbers:
 *
 *   relative (SIIM-ACR): "gap length ..." where the first gap is the 0-based
 *     index of the first run's start and each later gap counts the zeros
 *     between the end of the previous run and the start of the next;
 *   standard (Kaggle):   "start length ..." with 1-based starts in
 *     increasing order.
 *
 * "-1" alone (surrounding whitespace allowed) is the empty mask in both
 * forms, and so is a string of no numbers at all.
 *
 * Plain C99, no Lua. Masks are row-major (H, W) float buffers; decode
 * writes 0 and 1, encode takes a pixel as foreground when its value > 0.5. */
#ifndef LPNX_IO_RLE_H
#define LPNX_IO_RLE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LPNX_RLE_RELATIVE = 0, /* SIIM-ACR: gap, length */
    LPNX_RLE_STANDARD = 1  /* Kaggle: 1-based start, length */
} lpnx_rle_format;

/* Decodes len bytes of s into mask (h*w floats, (H, W) row-major), which is
 * zero-filled first. h and w must be >= 1 with h*w < 2^62. Runs may touch
 * but a run may not reach past the last pixel; in the standard form runs
 * must be in increasing order without overlap. Returns 0, or non-zero with
 * the reason in err (the mask's contents are then unspecified). */
int lpnx_rle_decode(float *mask, const char *s, size_t len, int64_t h, int64_t w, lpnx_rle_format fmt,
                    char *err, size_t errlen);

/* Length in bytes (without a terminating NUL) of the string lpnx_rle_encode
 * writes for this mask. */
size_t lpnx_rle_encoded_len(const float *mask, int64_t h, int64_t w, lpnx_rle_format fmt);

/* Writes the encoding of mask (h*w floats, (H, W) row-major) into out:
 * maximal runs, numbers separated by single spaces, "-1" when no pixel is
 * set. Writes at most cap bytes, plus a NUL when there is room; returns the
 * full length (== lpnx_rle_encoded_len). */
size_t lpnx_rle_encode(char *out, size_t cap, const float *mask, int64_t h, int64_t w, lpnx_rle_format fmt);

#ifdef __cplusplus
}
#endif

#endif /* LPNX_IO_RLE_H */
