/* libFuzzer target: SIIM run-length decoding (both forms) and, for what
 * decodes, that encoding gives it back. The first two bytes pick the
 * mask's height and width (1..256), the third the form. */
#include <stdlib.h>
#include <string.h>

#include "../io/rle.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    char err[512];
    if (size < 3) return 0;
    int64_t h = data[0] + 1, w = data[1] + 1;
    lpnx_rle_format fmt = (data[2] & 1) ? LPNX_RLE_STANDARD : LPNX_RLE_RELATIVE;
    float *mask = malloc((size_t)(h * w) * sizeof(float));
    if (!mask) return 0;
    if (lpnx_rle_decode(mask, (const char *)data + 3, size - 3, h, w, fmt, err, sizeof err) == 0) {
        size_t len = lpnx_rle_encoded_len(mask, h, w, fmt);
        char *s = malloc(len + 1);
        float *again = malloc((size_t)(h * w) * sizeof(float));
        if (s && again) {
            lpnx_rle_encode(s, len + 1, mask, h, w, fmt);
            if (lpnx_rle_decode(again, s, len, h, w, fmt, err, sizeof err) != 0 ||
                memcmp(again, mask, (size_t)(h * w) * sizeof(float)) != 0)
                __builtin_trap(); /* encode must invert decode */
        }
        free(s);
        free(again);
    }
    free(mask);
    return 0;
}
