#include "tensor.h"

#include <pthread.h>
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

/* ---- storage allocator ------------------------------------------------ */
/* Data blocks of at least CACHE_MIN bytes are rounded up to a size class
 * (four per power of two, so at most 25% larger) and, when their storage
 * is released, kept in a free list of that class while the cache holds at
 * most cache_limit bytes in all; the next request of the class takes a
 * block back instead of asking the system. A training step makes the same
 * sizes over and over, and fresh pages from the system fault in one by one
 * on first touch, which costs more system time than the step's arithmetic
 * on them. Smaller blocks go straight to malloc, which recycles them well.
 *
 * One mutex guards the lists and the counters. Storages are made and
 * released by the thread running Lua (the OpenMP workers of the kernels
 * never allocate storages; data-loader workers are separate processes,
 * each with its own copy of this state after fork), but a storage handed
 * to another thread may be released there, and the mutex keeps that safe. */
#define CACHE_MIN_LOG 16 /* 64 KiB */
#define CACHE_MIN ((size_t)1 << CACHE_MIN_LOG)
#define CACHE_LIMIT_DEFAULT ((size_t)512 << 20)
#define NCLASSES ((63 - CACHE_MIN_LOG + 1) * 4)

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
/* A cached block is poisoned past its list link, so a use after free of a
 * tensor's data is still reported while the block waits for reuse. */
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

typedef struct free_block {
    struct free_block *next; /* written over the first bytes of the freed data */
} free_block;

static struct {
    pthread_mutex_t lock;
    free_block *lists[NCLASSES]; /* cached blocks, one list per size class */
    size_t allocated;            /* bytes of the blocks of live storages */
    size_t cached;               /* bytes of the blocks in the lists */
    size_t peak;                 /* the largest allocated has been */
    size_t limit;                /* cached stays at most this */
    uint64_t allocations;        /* blocks obtained from the system */
    uint64_t reuses;             /* blocks taken from the lists */
} pool = {PTHREAD_MUTEX_INITIALIZER, {NULL}, 0, 0, 0, CACHE_LIMIT_DEFAULT, 0, 0};

/* The bytes of the block that holds n floats: whole 64-byte lines, and
 * from CACHE_MIN on, the size of its class (*cls; -1 below CACHE_MIN). */
static size_t block_bytes(size_t n, int *cls) {
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    *cls = -1;
    if (bytes < CACHE_MIN) return bytes;
    int k = 63 - __builtin_clzll((unsigned long long)bytes);
    size_t step = (size_t)1 << (k - 2);
    bytes = (bytes + step - 1) & ~(step - 1);
    k = 63 - __builtin_clzll((unsigned long long)bytes);
    *cls = (k - CACHE_MIN_LOG) * 4 + (int)(bytes >> (k - 2)) - 4;
    return bytes;
}

/* Frees every cached block; the lock is held. Returns the bytes freed. */
static size_t drop_cached(size_t keep) {
    size_t freed = 0;
    for (int c = NCLASSES - 1; c >= 0 && pool.cached > keep; c--) {
        while (pool.lists[c] && pool.cached > keep) {
            free_block *b = pool.lists[c];
            pool.lists[c] = b->next;
            size_t bytes = (size_t)1 << (c / 4 + CACHE_MIN_LOG - 2);
            bytes *= (size_t)(c % 4 + 4);
            pool.cached -= bytes;
            freed += bytes;
            UNPOISON(b, bytes);
            free(b);
        }
    }
    return freed;
}

/* A block for n floats (n > 0), or NULL when the system has none. */
static float *block_alloc(size_t n) {
    int cls;
    size_t bytes = block_bytes(n, &cls);
    void *p = NULL;
    pthread_mutex_lock(&pool.lock);
    if (cls >= 0 && pool.lists[cls]) {
        free_block *b = pool.lists[cls];
        UNPOISON(b, bytes);
        pool.lists[cls] = b->next;
        pool.cached -= bytes;
        pool.reuses++;
        p = b;
    } else {
        pthread_mutex_unlock(&pool.lock);
        if (posix_memalign(&p, 64, bytes) != 0) {
            /* Give the cached blocks back to the system and try once more. */
            pthread_mutex_lock(&pool.lock);
            drop_cached(0);
            pthread_mutex_unlock(&pool.lock);
            if (posix_memalign(&p, 64, bytes) != 0) return NULL;
        }
        pthread_mutex_lock(&pool.lock);
        pool.allocations++;
    }
    pool.allocated += bytes;
    if (pool.allocated > pool.peak) pool.peak = pool.allocated;
    pthread_mutex_unlock(&pool.lock);
    return p;
}

/* Returns the block of n floats at p to the cache, or to the system. */
static void block_free(float *p, size_t n) {
    int cls;
    size_t bytes = block_bytes(n, &cls);
    pthread_mutex_lock(&pool.lock);
    pool.allocated -= bytes;
    if (cls >= 0 && pool.cached + bytes <= pool.limit) {
        free_block *b = (free_block *)(void *)p;
        b->next = pool.lists[cls];
        pool.lists[cls] = b;
        pool.cached += bytes;
        POISON((char *)b + 64, bytes - 64);
        p = NULL;
    }
    pthread_mutex_unlock(&pool.lock);
    free(p);
}

void lpnx_memory_get_stats(lpnx_memory_stats *st) {
    pthread_mutex_lock(&pool.lock);
    st->allocated_bytes = pool.allocated;
    st->cached_bytes = pool.cached;
    st->peak_bytes = pool.peak;
    st->cache_limit = pool.limit;
    st->allocations = pool.allocations;
    st->reuses = pool.reuses;
    pthread_mutex_unlock(&pool.lock);
}

size_t lpnx_memory_empty_cache(void) {
    pthread_mutex_lock(&pool.lock);
    size_t freed = drop_cached(0);
    pthread_mutex_unlock(&pool.lock);
    return freed;
}

void lpnx_memory_set_cache_limit(size_t bytes) {
    pthread_mutex_lock(&pool.lock);
    pool.limit = bytes;
    drop_cached(bytes);
    pthread_mutex_unlock(&pool.lock);
}

lpnx_Storage *lpnx_storage_new(size_t n, int zero) {
    lpnx_Storage *s = malloc(sizeof *s);
    if (!s) return NULL;
    s->data = NULL;
    s->size = n;
    s->refcount = 1;
    if (n > 0) {
        if (n > (SIZE_MAX / 2 - 63) / sizeof(float)) { free(s); return NULL; }
        s->data = block_alloc(n);
        if (!s->data) { free(s); return NULL; }
        if (zero) memset(s->data, 0, n * sizeof(float));
    }
    return s;
}

void lpnx_storage_retain(lpnx_Storage *s) {
    if (s) __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED);
}

void lpnx_storage_release(lpnx_Storage *s) {
    if (s && __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
        if (s->data) block_free(s->data, s->size);
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
