/* libFuzzer target: the restricted unpickler (lpnx/io/pickle.c) on
 * arbitrary bytes; a parse that succeeds is walked to its leaves. */
#include <stdlib.h>

#include "../io/pickle.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static size_t walk(const lpnx_pk_value *v, int depth) {
    size_t n = 1, i;
    if (depth > 10000)
        return n;
    if (v->kind == LPNX_PK_TUPLE || v->kind == LPNX_PK_LIST || v->kind == LPNX_PK_DICT)
        for (i = 0; i < v->u.seq.n; i++)
            n += walk(v->u.seq.items[i], depth + 1);
    else if (v->kind == LPNX_PK_TENSOR)
        n += (size_t)v->u.tensor.storage->u.storage.numel > 0;
    return n;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    char err[512];
    lpnx_pk_result r;
    if (lpnx_pk_parse(data, size, &r, err, sizeof err) == 0) {
        (void)walk(r.root, 0);
        lpnx_pk_free(&r);
    }
    return 0;
}
