#include "tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *lpnx_strerror(lpnx_status s) {
    switch (s) {
    case LPNX_OK: return "no error";
    case LPNX_ENOMEM: return "not enough memory";
    case LPNX_EOVERFLOW: return "size overflows the address space";
    case LPNX_EINVAL: return "invalid argument";
    }
    return "unknown error";
}

lpnx_Storage *lpnx_storage_new(size_t n, int zero) {
    lpnx_Storage *s = malloc(sizeof *s);
    if (!s) return NULL;
    s->data = NULL;
    s->size = n;
    s->refcount = 1;
    if (n > 0) {
        if (n > (SIZE_MAX - 63) / sizeof(float)) { free(s); return NULL; }
        size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
        void *p = NULL;
        if (posix_memalign(&p, 64, bytes) != 0) { free(s); return NULL; }
        s->data = p;
        if (zero) memset(s->data, 0, n * sizeof(float));
    }
    return s;
}

void lpnx_storage_retain(lpnx_Storage *s) {
    if (s) __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED);
}

void lpnx_storage_release(lpnx_Storage *s) {
    if (s && __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
        free(s->data);
        free(s);
    }
}

lpnx_status lpnx_numel_of(int ndim, const int64_t *size, size_t *numel) {
    size_t n = 1, span = 1; /* span: the product with zeros taken as 1, which strides reach */
    for (int d = 0; d < ndim; d++) {
        if (size[d] < 0) return LPNX_EINVAL;
        if ((uint64_t)size[d] > SIZE_MAX) return LPNX_EOVERFLOW;
        size_t s = size[d] ? (size_t)size[d] : 1;
        if (span > (SIZE_MAX / 2 / sizeof(float)) / s) return LPNX_EOVERFLOW;
        span *= s;
        n *= (size_t)size[d];
    }
    /* Leave room for byte counts of the whole tensor. */
    if (n > SIZE_MAX / (2 * sizeof(float))) return LPNX_EOVERFLOW;
    *numel = n;
    return LPNX_OK;
}

lpnx_status lpnx_tensor_alloc(lpnx_Tensor *t, int ndim, const int64_t *size, int zero) {
    size_t n;
    if (ndim < 0 || ndim > LPNX_MAXDIM) return LPNX_EINVAL;
    lpnx_status st = lpnx_numel_of(ndim, size, &n);
    if (st != LPNX_OK) return st;
    lpnx_Storage *s = lpnx_storage_new(n, zero);
    if (!s) return LPNX_ENOMEM;
    t->storage = s;
    t->offset = 0;
    t->ndim = ndim;
    int64_t stride = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        t->size[d] = size[d];
        t->stride[d] = stride;
        stride *= size[d] > 0 ? size[d] : 1;
    }
    return LPNX_OK;
}

void lpnx_tensor_free(lpnx_Tensor *t) {
    lpnx_storage_release(t->storage);
    memset(t, 0, sizeof *t);
}

void lpnx_tensor_share(lpnx_Tensor *dst, const lpnx_Tensor *src) {
    lpnx_storage_retain(src->storage);
    *dst = *src;
}

size_t lpnx_tensor_numel(const lpnx_Tensor *t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->size[d];
    return n;
}

int lpnx_tensor_is_contiguous(const lpnx_Tensor *t) {
    int64_t expected = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->size[d] == 1) continue;
        if (t->size[d] == 0) return 1;
        if (t->stride[d] != expected) return 0;
        expected *= t->size[d];
    }
    return 1;
}

void lpnx_shape_str(char *buf, size_t len, int ndim, const int64_t *size) {
    if (len == 0) return;
    buf[0] = '\0';
    if (ndim == 0) { snprintf(buf, len, "scalar"); return; }
    size_t used = 0;
    for (int d = 0; d < ndim && used < len; d++) {
        int w = snprintf(buf + used, len - used, d ? "x%lld" : "%lld", (long long)size[d]);
        if (w < 0) break;
        used += (size_t)w;
    }
}

void lpnx_tensor_narrow(lpnx_Tensor *t, int dim, int64_t start, int64_t length) {
    if (length > 0) t->offset += (size_t)(start * t->stride[dim]);
    t->size[dim] = length;
}

void lpnx_tensor_select(lpnx_Tensor *t, int dim, int64_t index) {
    t->offset += (size_t)(index * t->stride[dim]);
    for (int d = dim; d < t->ndim - 1; d++) {
        t->size[d] = t->size[d + 1];
        t->stride[d] = t->stride[d + 1];
    }
    t->ndim--;
}

void lpnx_tensor_transpose(lpnx_Tensor *t, int d1, int d2) {
    int64_t s = t->size[d1], st = t->stride[d1];
    t->size[d1] = t->size[d2];
    t->stride[d1] = t->stride[d2];
    t->size[d2] = s;
    t->stride[d2] = st;
}

void lpnx_tensor_permute(lpnx_Tensor *t, const int *perm) {
    lpnx_Tensor old = *t;
    for (int d = 0; d < t->ndim; d++) {
        t->size[d] = old.size[perm[d]];
        t->stride[d] = old.stride[perm[d]];
    }
}

/* PyTorch's rule: walk the old dims in chunks that are themselves
 * contiguous, and match each chunk's element count with a run of new dims. */
lpnx_status lpnx_tensor_view(lpnx_Tensor *t, int ndim, const int64_t *size) {
    int64_t newstride[LPNX_MAXDIM];
    size_t numel = lpnx_tensor_numel(t), n2;
    if (ndim < 0 || ndim > LPNX_MAXDIM) return LPNX_EINVAL;
    if (lpnx_numel_of(ndim, size, &n2) != LPNX_OK || n2 != numel) return LPNX_EINVAL;
    if (numel == 0 || lpnx_tensor_is_contiguous(t)) {
        int64_t s = 1;
        for (int d = ndim - 1; d >= 0; d--) {
            newstride[d] = s;
            s *= size[d] > 0 ? size[d] : 1;
        }
    } else {
        int view_d = ndim - 1;
        int64_t chunk_base_stride = t->ndim ? t->stride[t->ndim - 1] : 1;
        int64_t tensor_numel = 1, view_numel = 1;
        for (int d = t->ndim - 1; d >= 0; d--) {
            tensor_numel *= t->size[d];
            if (d == 0 || (t->size[d - 1] != 1 && t->stride[d - 1] != tensor_numel * chunk_base_stride)) {
                while (view_d >= 0 && (view_numel < tensor_numel || size[view_d] == 1)) {
                    newstride[view_d] = view_numel * chunk_base_stride;
                    view_numel *= size[view_d];
                    view_d--;
                }
                if (view_numel != tensor_numel) return LPNX_EINVAL;
                if (d > 0) {
                    chunk_base_stride = t->stride[d - 1];
                    tensor_numel = 1;
                    view_numel = 1;
                }
            }
        }
        if (view_d != -1) return LPNX_EINVAL;
    }
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        t->size[d] = size[d];
        t->stride[d] = newstride[d];
    }
    return LPNX_OK;
}

/* Row-major walk over a strided tensor: the last dim is the inner loop,
 * the others advance an index counter. */
static void strided_walk(float *flat, const lpnx_Tensor *t, int to_flat) {
    size_t numel = lpnx_tensor_numel(t);
    if (numel == 0) return;
    float *base = lpnx_tensor_data(t);
    if (lpnx_tensor_is_contiguous(t)) {
        if (to_flat) memcpy(flat, base, numel * sizeof(float));
        else memcpy(base, flat, numel * sizeof(float));
        return;
    }
    int nd = t->ndim;
    int64_t inner = nd ? t->size[nd - 1] : 1, istride = nd ? t->stride[nd - 1] : 1;
    int64_t idx[LPNX_MAXDIM] = {0};
    size_t rows = numel / (size_t)inner;
    for (size_t r = 0; r < rows; r++) {
        int64_t off = 0;
        for (int d = 0; d < nd - 1; d++) off += idx[d] * t->stride[d];
        float *p = base + off;
        if (to_flat) for (int64_t i = 0; i < inner; i++) flat[i] = p[i * istride];
        else for (int64_t i = 0; i < inner; i++) p[i * istride] = flat[i];
        flat += inner;
        for (int d = nd - 2; d >= 0; d--) {
            if (++idx[d] < t->size[d]) break;
            idx[d] = 0;
        }
    }
}

void lpnx_tensor_gather(float *dst, const lpnx_Tensor *src) { strided_walk(dst, src, 1); }
void lpnx_tensor_scatter(lpnx_Tensor *dst, const float *src) { strided_walk((float *)src, dst, 0); }
