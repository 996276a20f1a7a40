/* libFuzzer target: whole checkpoint files through lpnx/io/torch_ckpt.c:
 * the zip archive (libzip, every record's CRC), the legacy format's
 * consecutive pickles and raw storages, and the gathering of every tensor
 * a parse finds. The reader opens files by name, so each input is written
 * to one temporary file first. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../io/torch_ckpt.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static char path[64];

static void remove_file(void) { unlink(path); }

/* Gathers every tensor under v, up to a bounded number of elements each. */
static void gather(lpnx_torch_ckpt *c, const lpnx_pk_value *v, int depth) {
    char err[512];
    size_t i;
    if (depth > 1000)
        return;
    if (v->kind == LPNX_PK_TUPLE || v->kind == LPNX_PK_LIST || v->kind == LPNX_PK_DICT) {
        for (i = 0; i < v->u.seq.n; i++)
            gather(c, v->u.seq.items[i], depth + 1);
    } else if (v->kind == LPNX_PK_TENSOR) {
        int64_t n = 1;
        int d;
        for (d = 0; d < v->u.tensor.ndim; d++)
            n *= v->u.tensor.size[d];
        if (n < 0 || n > (1 << 22))
            return;
        float *out = (float *)malloc((size_t)n * sizeof(float) + 1);
        if (out != NULL)
            (void)lpnx_torch_tensor_f32(c, v, out, err, sizeof err);
        free(out);
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    char err[1024];
    if (path[0] == '\0') {
        snprintf(path, sizeof path, "/tmp/lpnx-fuzz-torch-%ld.pth", (long)getpid());
        atexit(remove_file);
    }
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return 0;
    if (fwrite(data, 1, size, f) != size) {
        fclose(f);
        return 0;
    }
    fclose(f);
    lpnx_torch_ckpt *c = lpnx_torch_open(path, err, sizeof err);
    if (c != NULL) {
        gather(c, lpnx_torch_root(c), 0);
        lpnx_torch_close(c);
    }
    return 0;
}
