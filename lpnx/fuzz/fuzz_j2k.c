/* libFuzzer target: JPEG 2000 codestreams and JP2 files through OpenJPEG
 * (j2k.c). The first 6 bytes are what a data set would declare: rows and
 * columns (16-bit big endian each), samples (1 or 3 from the low bit),
 * then bits allocated (8 or 16 from the low bit), with BitsStored from the
 * high nibble and PixelRepresentation from bit 1; the rest is the frame.
 * Images of more than 2^22 pixels are left out to keep runs fast. */
#include <stdint.h>
#include <stdlib.h>

#include "../io/j2k.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size < 6) return 0;
    lpnx_j2k_want want;
    want.rows = (data[0] << 8) | data[1];
    want.columns = (data[2] << 8) | data[3];
    want.samples = (data[4] & 1) ? 3 : 1;
    want.bits_allocated = (data[5] & 1) ? 16 : 8;
    want.bits_stored = 1 + (data[5] >> 4) % want.bits_allocated;
    want.pixel_representation = (data[5] >> 1) & 1;
    size_t n = (size_t)want.rows * (size_t)want.columns;
    if (n == 0 || n > (1u << 22)) return 0;
    void *out = malloc(n * (size_t)want.samples * (size_t)(want.bits_allocated / 8));
    if (!out) return 0;
    char err[300];
    lpnx_j2k_got got;
    lpnx_j2k_decode(out, data + 6, size - 6, &want, &got, err, sizeof err);
    free(out);
    return 0;
}
