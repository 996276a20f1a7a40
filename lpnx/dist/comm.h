/* Data-parallel collectives over MPI for float32 buffers: plain C, no Lua.
 * Every function returns 0 on success or an MPI error code; lpnx_comm_error
 * turns a code into text. All of them act on MPI_COMM_WORLD, which is set
 * to return errors instead of aborting, and must be called by every
 * process in the same order (they are collectives). */
#ifndef LPNX_DIST_COMM_H
#define LPNX_DIST_COMM_H

#include <stddef.h>

/* Initialises MPI (once; thread level FUNNELED: only the calling thread
 * talks to MPI, OpenMP threads inside kernels are fine). */
int lpnx_comm_init(void);
/* 1 between a successful init and finalize. */
int lpnx_comm_active(void);
/* Finalises MPI and frees the bucket buffer; safe twice. */
int lpnx_comm_finalize(void);
int lpnx_comm_rank(int *rank);
int lpnx_comm_size(int *size);
/* Processes of this job on this machine (for dividing its cores). */
int lpnx_comm_local_size(int *size);
int lpnx_comm_barrier(void);
/* Ends every process of the job with code; does not return. */
void lpnx_comm_abort(int code);

/* In-place sum over processes of buf (n floats); mean: then divided by
 * the number of processes. With a power of two of processes the sum is
 * added up in a fixed tree (rank r with r ^ size/2 first, ..., r ^ 1
 * last), the same bits on every process and the order in which
 * lpnx_conv2d_tree_sum adds a batch's images; otherwise in MPI's order. */
int lpnx_comm_allreduce(float *buf, size_t n, int mean);
/* The same for n doubles (statistics, metrics). */
int lpnx_comm_allreduce_double(double *buf, size_t n, int mean);

/* Sums (or averages) count buffers bufs[k] of ns[k] floats, packed into
 * buckets of at most bucket floats so that many small tensors cost few
 * calls; a buffer larger than a bucket goes on its own, in place. The
 * bucket memory is kept for the next call. */
int lpnx_comm_allreduce_many(float *const *bufs, const size_t *ns, size_t count, size_t bucket, int mean);

/* Root's n floats to every process. */
int lpnx_comm_broadcast(float *buf, size_t n, int root);

/* Text for an error code (static storage, overwritten by the next call);
 * codes of lpnx's own: LPNX_COMM_ENOMEM, LPNX_COMM_ENOTINIT. */
#define LPNX_COMM_ENOMEM (-1)
#define LPNX_COMM_ENOTINIT (-2)
const char *lpnx_comm_error(int code);

#endif
