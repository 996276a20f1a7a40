/* Collectives over MPI_COMM_WORLD for data-parallel training (comm.h). */
#include "comm.h"

#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

static int active = 0;
static float *bucket_buf = NULL; /* (bucket_cap) packing space of allreduce_many */
static size_t bucket_cap = 0;
static float *recv_buf = NULL;   /* (recv_cap) what a partner sends, in tree_sum */
static size_t recv_cap = 0;
/* Floats a tree_sum exchange moves at a time. */
#define EXCHANGE_FLOATS ((size_t)1 << 22)

int lpnx_comm_init(void) {
    int inited = 0, finished = 0, provided;
    MPI_Finalized(&finished);
    if (finished) return MPI_ERR_OTHER;
    MPI_Initialized(&inited);
    if (!inited) {
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return rc;
    }
    int rc = MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (rc != MPI_SUCCESS) return rc;
    active = 1;
    return MPI_SUCCESS;
}

int lpnx_comm_active(void) { return active; }

int lpnx_comm_finalize(void) {
    free(bucket_buf);
    bucket_buf = NULL;
    bucket_cap = 0;
    free(recv_buf);
    recv_buf = NULL;
    recv_cap = 0;
    if (!active) return MPI_SUCCESS;
    active = 0;
    return MPI_Finalize();
}

int lpnx_comm_rank(int *rank) { return active ? MPI_Comm_rank(MPI_COMM_WORLD, rank) : LPNX_COMM_ENOTINIT; }

int lpnx_comm_size(int *size) { return active ? MPI_Comm_size(MPI_COMM_WORLD, size) : LPNX_COMM_ENOTINIT; }

int lpnx_comm_local_size(int *size) {
    if (!active) return LPNX_COMM_ENOTINIT;
    MPI_Comm local;
    int rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
    if (rc != MPI_SUCCESS) return rc;
    rc = MPI_Comm_size(local, size);
    MPI_Comm_free(&local);
    return rc;
}

int lpnx_comm_barrier(void) { return active ? MPI_Barrier(MPI_COMM_WORLD) : LPNX_COMM_ENOTINIT; }

void lpnx_comm_abort(int code) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code); /* not reached under MPI */
}

/* Sum of n elements of type t in place, in calls of at most INT_MAX. */
static int allreduce_chunks(void *buf, size_t n, MPI_Datatype t, size_t elem) {
    char *p = buf;
    while (n > 0) {
        int k = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        int rc = MPI_Allreduce(MPI_IN_PLACE, p, k, t, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return rc;
        p += (size_t)k * elem;
        n -= (size_t)k;
    }
    return MPI_SUCCESS;
}

static int world_size(int *size) { return MPI_Comm_size(MPI_COMM_WORLD, size); }

/* The sum of buf over 2^k processes in a fixed order: rank r adds what
 * rank r ^ 2^(k-1) holds, then r ^ 2^(k-2), ..., then r ^ 1. Both
 * partners of an exchange compute a + b, the same bits (float addition
 * commutes), so every process ends with the same sum, added up in the
 * tree that lpnx_conv2d_tree_sum uses for the images of a batch: a batch
 * spread over the processes sums to the bits of one process. */
static int tree_sum(float *buf, size_t n, int rank, int size) {
    if (recv_cap < EXCHANGE_FLOATS) {
        float *b = realloc(recv_buf, EXCHANGE_FLOATS * sizeof(float));
        if (!b) return LPNX_COMM_ENOMEM;
        recv_buf = b;
        recv_cap = EXCHANGE_FLOATS;
    }
    for (int mask = size / 2; mask >= 1; mask /= 2) {
        const int partner = rank ^ mask;
        for (size_t at = 0; at < n; at += EXCHANGE_FLOATS) {
            const int k = (int)(n - at < EXCHANGE_FLOATS ? n - at : EXCHANGE_FLOATS);
            int rc = MPI_Sendrecv(buf + at, k, MPI_FLOAT, partner, mask, recv_buf, k, MPI_FLOAT, partner, mask,
                                  MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            if (rc != MPI_SUCCESS) return rc;
            for (int i = 0; i < k; i++) buf[at + (size_t)i] += recv_buf[i];
        }
    }
    return MPI_SUCCESS;
}

int lpnx_comm_allreduce(float *buf, size_t n, int mean) {
    int size, rank, rc;
    if (!active) return LPNX_COMM_ENOTINIT;
    if ((rc = world_size(&size)) != MPI_SUCCESS) return rc;
    if ((rc = MPI_Comm_rank(MPI_COMM_WORLD, &rank)) != MPI_SUCCESS) return rc;
    if ((size & (size - 1)) == 0)
        rc = tree_sum(buf, n, rank, size);
    else /* no fixed tree: MPI's own order */
        rc = allreduce_chunks(buf, n, MPI_FLOAT, sizeof(float));
    if (rc != MPI_SUCCESS) return rc;
    if (mean && size > 1) {
        const float inv = 1.0f / (float)size;
        for (size_t i = 0; i < n; i++) buf[i] *= inv;
    }
    return MPI_SUCCESS;
}

int lpnx_comm_allreduce_double(double *buf, size_t n, int mean) {
    int size, rc;
    if (!active) return LPNX_COMM_ENOTINIT;
    if ((rc = world_size(&size)) != MPI_SUCCESS) return rc;
    if ((rc = allreduce_chunks(buf, n, MPI_DOUBLE, sizeof(double))) != MPI_SUCCESS) return rc;
    if (mean && size > 1)
        for (size_t i = 0; i < n; i++) buf[i] /= size;
    return MPI_SUCCESS;
}

/* Reduces bufs[first..last) packed one after another in bucket_buf
 * (used floats), then copies the results back. */
static int flush_bucket(float *const *bufs, const size_t *ns, size_t first, size_t last, size_t used, int mean) {
    if (used == 0) return MPI_SUCCESS;
    int rc = lpnx_comm_allreduce(bucket_buf, used, mean);
    if (rc != MPI_SUCCESS) return rc;
    size_t at = 0;
    for (size_t k = first; k < last; k++) {
        if (ns[k] > bucket_cap) continue; /* reduced on its own */
        memcpy(bufs[k], bucket_buf + at, ns[k] * sizeof(float));
        at += ns[k];
    }
    return MPI_SUCCESS;
}

int lpnx_comm_allreduce_many(float *const *bufs, const size_t *ns, size_t count, size_t bucket, int mean) {
    if (!active) return LPNX_COMM_ENOTINIT;
    if (bucket == 0) bucket = 1;
    if (bucket_cap != bucket) {
        float *b = realloc(bucket_buf, bucket * sizeof(float));
        if (!b) return LPNX_COMM_ENOMEM;
        bucket_buf = b;
        bucket_cap = bucket;
    }
    size_t first = 0, used = 0;
    for (size_t k = 0; k < count; k++) {
        int rc;
        if (ns[k] > bucket_cap) { /* too big to pack: in place, alone */
            if ((rc = lpnx_comm_allreduce(bufs[k], ns[k], mean)) != MPI_SUCCESS) return rc;
            continue;
        }
        if (used + ns[k] > bucket_cap) {
            if ((rc = flush_bucket(bufs, ns, first, k, used, mean)) != MPI_SUCCESS) return rc;
            first = k;
            used = 0;
        }
        memcpy(bucket_buf + used, bufs[k], ns[k] * sizeof(float));
        used += ns[k];
    }
    return flush_bucket(bufs, ns, first, count, used, mean);
}

int lpnx_comm_broadcast(float *buf, size_t n, int root) {
    if (!active) return LPNX_COMM_ENOTINIT;
    char *p = (char *)buf;
    while (n > 0) {
        int k = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        int rc = MPI_Bcast(p, k, MPI_FLOAT, root, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return rc;
        p += (size_t)k * sizeof(float);
        n -= (size_t)k;
    }
    return MPI_SUCCESS;
}

const char *lpnx_comm_error(int code) {
    static char text[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (code == LPNX_COMM_ENOMEM) return "not enough memory for the reduction buffer";
    if (code == LPNX_COMM_ENOTINIT) return "MPI is not initialised (call lpnx.dist.init() first)";
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "unknown MPI error";
    text[len] = '\0';
    return text;
}
