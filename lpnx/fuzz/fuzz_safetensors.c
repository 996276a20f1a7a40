/* libFuzzer target: the safetensors reader (header JSON, offsets, dtype
 * conversion) on arbitrary bytes. */
#include <stdlib.h>

#include "../io/safetensors.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    char err[512];
    lpnx_st_file f = {0};
    if (lpnx_st_parse(&f, data, size, err, sizeof err) == 0) {
        for (size_t i = 0; i < f.n_entries; i++) {
            size_t n = 1;
            for (int d = 0; d < f.entries[i].ndim; d++) n *= (size_t)f.entries[i].shape[d];
            if (n > (1u << 22)) continue; /* the parser checked the bytes exist; keep memory small */
            float *out = malloc((n ? n : 1) * sizeof(float));
            if (out) lpnx_st_to_f32(out, &f, &f.entries[i]);
            free(out);
        }
        lpnx_st_free(&f);
    }
    return 0;
}
