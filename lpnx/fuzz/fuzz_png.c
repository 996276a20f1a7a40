/* libFuzzer target: PNG header reading and full decoding through libpng. */
#include <stdlib.h>

#include "../io/png.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    char err[512];
    lpnx_png_info info;
    if (lpnx_png_read_info(&info, data, size, err, sizeof err) != 0) return 0;
    size_t n = (size_t)info.channels * info.width * info.height;
    if (n > (1u << 24)) return 0; /* a valid but huge image: not this target's concern */
    float *out = malloc(n * sizeof(float));
    if (out) lpnx_png_decode(out, &info, data, size, err, sizeof err);
    free(out);
    return 0;
}
