/* Tensors: a refcounted float32 storage and a small header (sizes, strides,
 * offset) that views share. Plain C, no Lua: every function that can fail
 * returns an lpnx_status and leaves its outputs untouched on failure. */
#ifndef LPNX_TENSOR_H
#define LPNX_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define LPNX_MAXDIM 8

typedef enum {
    LPNX_OK = 0,
    LPNX_ENOMEM,    /* allocation failed */
    LPNX_EOVERFLOW, /* a size product does not fit in size_t */
    LPNX_EINVAL     /* arguments that cannot describe a valid result */
} lpnx_status;

const char *lpnx_strerror(lpnx_status s);

/* Refcounted, 64-byte aligned float buffer. The count is atomic so tensors
 * may be handed between threads; the data itself is not synchronised. */
typedef struct lpnx_Storage {
    float *data;     /* (size) floats, NULL when size == 0 */
    size_t size;     /* number of floats */
    int refcount;
} lpnx_Storage;

/* A view: element (i1..in) (0-based here) lives at
 * storage->data[offset + sum_k i_k * stride[k]]. Strides count floats and
 * are never negative. ndim == 0 is a scalar with one element. */
typedef struct lpnx_Tensor {
    lpnx_Storage *storage; /* owned reference; NULL only in the empty state */
    size_t offset;
    int ndim;
    int64_t size[LPNX_MAXDIM];
    int64_t stride[LPNX_MAXDIM];
} lpnx_Tensor;

/* n floats, zero-filled when zero != 0. NULL on failure. */
lpnx_Storage *lpnx_storage_new(size_t n, int zero);
void lpnx_storage_retain(lpnx_Storage *s);
void lpnx_storage_release(lpnx_Storage *s);

/* The storage allocator (tensor.c) keeps freed blocks of 64 KiB and more
 * for reuse by later storages of their size class, up to a bounded total,
 * so that a training step that makes the same sizes each time stops
 * asking the system for fresh (page-faulting) memory. Thread-safe. */
typedef struct {
    size_t allocated_bytes; /* blocks held by live storages (as allocated, rounded up) */
    size_t cached_bytes;    /* freed blocks kept for reuse */
    size_t peak_bytes;      /* the largest allocated_bytes has been */
    size_t cache_limit;     /* cached_bytes stays at most this */
    uint64_t allocations;   /* blocks obtained from the system */
    uint64_t reuses;        /* blocks taken back from the cache */
} lpnx_memory_stats;
void lpnx_memory_get_stats(lpnx_memory_stats *st);
/* Frees every cached block; returns the bytes freed. */
size_t lpnx_memory_empty_cache(void);
/* Bounds the cache (frees cached blocks above the new bound). */
void lpnx_memory_set_cache_limit(size_t bytes);

/* Product of sizes with overflow check; also rejects negative sizes. */
lpnx_status lpnx_numel_of(int ndim, const int64_t *size, size_t *numel);

/* A fresh contiguous tensor over new storage. t must be in the empty state
 * (all zero) and stays so on failure. */
lpnx_status lpnx_tensor_alloc(lpnx_Tensor *t, int ndim, const int64_t *size, int zero);
/* Releases t's storage and returns it to the empty state; safe twice. */
void lpnx_tensor_free(lpnx_Tensor *t);
/* dst becomes another view of src (shares and retains the storage). */
void lpnx_tensor_share(lpnx_Tensor *dst, const lpnx_Tensor *src);

size_t lpnx_tensor_numel(const lpnx_Tensor *t);
int lpnx_tensor_is_contiguous(const lpnx_Tensor *t);
static inline float *lpnx_tensor_data(const lpnx_Tensor *t) {
    return t->storage && t->storage->data ? t->storage->data + t->offset : NULL;
}
/* Formats sizes as "2x3x4" ("scalar" for ndim 0) into buf. */
void lpnx_shape_str(char *buf, size_t len, int ndim, const int64_t *size);

/* Header-only views (0-based dims and indices; callers have validated). */
void lpnx_tensor_narrow(lpnx_Tensor *t, int dim, int64_t start, int64_t length);
void lpnx_tensor_select(lpnx_Tensor *t, int dim, int64_t index);
void lpnx_tensor_transpose(lpnx_Tensor *t, int d1, int d2);
/* perm must be a permutation of 0..ndim-1. */
void lpnx_tensor_permute(lpnx_Tensor *t, const int *perm);
/* Reinterprets t with new sizes when the existing strides allow it without
 * a copy (PyTorch's view rule); LPNX_EINVAL otherwise. numel must match. */
lpnx_status lpnx_tensor_view(lpnx_Tensor *t, int ndim, const int64_t *size);

/* Copies the elements of a strided tensor in row-major order into dst
 * (numel floats). */
void lpnx_tensor_gather(float *dst, const lpnx_Tensor *src);
/* Writes numel floats from src in row-major order into the strided dst. */
void lpnx_tensor_scatter(lpnx_Tensor *dst, const float *src);

#endif
