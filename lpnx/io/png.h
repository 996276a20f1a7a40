/* PNG images to and from (C, H, W) float buffers in [0, 1], with libpng 1.6.
 *
 * Reading works on a file image in memory. Every kind of PNG is read:
 * gray (1, 2, 4, 8, 16 bit), gray + alpha, RGB and RGBA (8, 16 bit),
 * palette (1, 2, 4, 8 bit; expanded to RGB, or RGBA when a tRNS chunk gives
 * it transparency), Adam7-interlaced or not. A sample v of b bits becomes
 * v / (2^b - 1) (16-bit samples keep their full precision). Every ancillary
 * chunk but tRNS (gamma, colour space, significant bits, text, ...) is
 * skipped unread, so values are as stored; a tRNS chunk of a gray or RGB
 * image is ignored too (no alpha channel is made). A palette index past the
 * end of the palette is an error, as is anything libpng rejects (CRC, zlib
 * stream, header, truncation, missing IEND).
 *
 * Writing gives non-interlaced gray, gray + alpha, RGB or RGBA PNGs of 8 or
 * 16 bits into a malloc'd buffer.
 *
 * libpng reports errors by longjmp; that stays inside png.c, which frees
 * every buffer on the error path. Nothing here aborts or keeps global state;
 * errors are returned as non-zero with the reason in the caller's buffer. */
#ifndef LPNX_IO_PNG_H
#define LPNX_IO_PNG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The colour type as stored in the file. */
typedef enum {
    LPNX_PNG_GRAY,
    LPNX_PNG_GRAY_ALPHA,
    LPNX_PNG_RGB,
    LPNX_PNG_RGBA,
    LPNX_PNG_PALETTE
} lpnx_png_color;

typedef struct {
    uint32_t width, height; /* >= 1 */
    int bit_depth;          /* as stored: 1, 2, 4, 8 or 16 */
    lpnx_png_color color;   /* as stored */
    int interlaced;         /* 1 for Adam7, 0 for none */
    int channels;           /* of the decoded image: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
} lpnx_png_info;

/* "gray", "gray_alpha", "rgb", "rgba" or "palette". */
const char *lpnx_png_color_name(lpnx_png_color c);

/* Reads the header of a PNG file image (len bytes) up to its first image
 * data. Rejects a file that cannot hold the image it claims (less data than
 * the best possible compression needs), so that no memory is spent on it.
 * Returns 0, or non-zero with the reason in err. */
int lpnx_png_read_info(lpnx_png_info *info, const unsigned char *bytes, size_t len, char *err, size_t errlen);

/* Decodes the whole file into out: (channels, height, width) floats, as
 * read by lpnx_png_read_info from the same bytes. The file is checked to
 * its end (IEND). Returns 0, or non-zero with the reason in err (out's
 * contents are then unspecified). */
int lpnx_png_decode(float *out, const lpnx_png_info *info, const unsigned char *bytes, size_t len, char *err,
                    size_t errlen);

/* Encodes image ((channels, height, width) floats; channels 1..4; height,
 * width >= 1) as a PNG of bit_depth 8 or 16. Values are clamped to [0, 1]
 * and rounded to the nearest level; a NaN is an error that names the first
 * one's place (1-based channel, row, column). On success *png is a malloc'd
 * buffer of *png_len bytes (free it with free()). */
int lpnx_png_encode(unsigned char **png, size_t *png_len, const float *image, int channels, uint32_t height,
                    uint32_t width, int bit_depth, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* LPNX_IO_PNG_H */
