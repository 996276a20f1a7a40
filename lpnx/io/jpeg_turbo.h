/* 8-bit JPEG frames (baseline, and extended with 8-bit samples) through
 * libjpeg-turbo's TurboJPEG API, for speed: the DICOM reader (dicom.cpp)
 * tries this first and falls back on DCMTK's own decoder for everything
 * it declines. Plain C, no Lua, no DCMTK; nothing here prints or aborts.
 *
 * Only what decodes to the same pixels as DCMTK's IJG decoder is taken:
 * the accurate integer IDCT and fancy upsampling (the defaults of both),
 * monochrome, or YCbCr turned into RGB as DCMTK does for a YBR
 * photometric interpretation, with 4:4:4, 4:2:2 or 4:2:0 chroma. Any
 * warning, such as damaged entropy-coded data, declines too, so that the
 * fallback reports it exactly as before. */
#ifndef LPNX_IO_JPEG_TURBO_H
#define LPNX_IO_JPEG_TURBO_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Decodes data[0..n) into out: rows x columns pixels of `samples` (1 or
 * 3) interleaved bytes (RGB when 3). ycbcr says the colour data set
 * declares a YBR photometric interpretation (the only colour case taken).
 * Returns 0, or -1 (the frame is declined: out may hold anything) with a
 * reason in err. With out NULL only the header is read and checked, so
 * that the caller allocates out only for a stream it will decode. */
int lpnx_jpeg_turbo_decode(unsigned char *out, const unsigned char *data, size_t n, int rows, int columns,
                           int samples, int ycbcr, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* LPNX_IO_JPEG_TURBO_H */
