/* 8-bit JPEG decoding with TurboJPEG (jpeg_turbo.h). TurboJPEG formats
 * libjpeg's messages into its own buffer (tjGetErrorStr2), never stderr. */
#include "jpeg_turbo.h"

#include <turbojpeg.h>

#include <stdarg.h>
#include <stdio.h>

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int lpnx_jpeg_turbo_decode(unsigned char *out, const unsigned char *data, size_t n, int rows, int columns,
                           int samples, int ycbcr, char *err, size_t errlen) {
    if (!data || n == 0 || n > 0xFFFFFFFFu || (samples != 1 && samples != 3)) {
        set_err(err, errlen, "no JPEG data");
        return -1;
    }
    tjhandle tj = tjInitDecompress();
    if (!tj) {
        set_err(err, errlen, "cannot start TurboJPEG");
        return -1;
    }
    int rc = -1, width = 0, height = 0, subsamp = -1, colorspace = -1;
    if (tjDecompressHeader3(tj, data, (unsigned long)n, &width, &height, &subsamp, &colorspace) != 0) {
        set_err(err, errlen, "%s", tjGetErrorStr2(tj));
    } else if (width != columns || height != rows) {
        set_err(err, errlen, "the JPEG stream is %d x %d, not %d x %d", height, width, rows, columns);
    } else if (samples == 1 && colorspace != TJCS_GRAY) {
        set_err(err, errlen, "not a one-component JPEG stream");
    } else if (samples == 3 && !(ycbcr && colorspace == TJCS_YCbCr &&
                                 (subsamp == TJSAMP_444 || subsamp == TJSAMP_422 || subsamp == TJSAMP_420))) {
        set_err(err, errlen, "a colour JPEG stream decoded differently by DCMTK");
    } else if (!out) {
        rc = 0;
    } else if (tjDecompress2(tj, data, (unsigned long)n, out, columns, 0, rows, samples == 1 ? TJPF_GRAY : TJPF_RGB,
                             TJFLAG_STOPONWARNING | TJFLAG_ACCURATEDCT) != 0) {
        set_err(err, errlen, "%s", tjGetErrorStr2(tj));
    } else {
        rc = 0;
    }
    tjDestroy(tj);
    return rc;
}
