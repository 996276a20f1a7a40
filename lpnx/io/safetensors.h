/* safetensors: a strict, bounds-checked reader and an atomic float32 writer.
 *
 * File layout: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON
 * (the header), then the data section of raw little-endian tensor bytes.
 * The header maps tensor names to {"dtype", "shape", "data_offsets"} and may
 * hold one "__metadata__" object of string -> string.
 *
 * Plain C99, no Lua. Nothing here aborts or keeps global state; every error
 * is returned as non-zero with a readable reason in the caller's buffer. */
#ifndef LPNX_IO_SAFETENSORS_H
#define LPNX_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LPNX_ST_MAXDIM 8

/* Largest header the reader accepts (bytes); the writer refuses to exceed it. */
#define LPNX_ST_MAX_HEADER 100000000u

/* Element types understood by the reader. The writer only produces F32. */
typedef enum {
    LPNX_ST_F32, LPNX_ST_F16, LPNX_ST_BF16, LPNX_ST_F64, LPNX_ST_I64, LPNX_ST_I32,
    LPNX_ST_I16, LPNX_ST_I8, LPNX_ST_U8, LPNX_ST_BOOL
} lpnx_st_dtype;

/* One tensor described by the header. */
typedef struct {
    char *name;                     /* UTF-8, NUL-terminated; never contains NUL */
    lpnx_st_dtype dtype;            /* element type of the stored bytes */
    int ndim;                       /* 0..LPNX_ST_MAXDIM; 0 = scalar with 1 element */
    int64_t shape[LPNX_ST_MAXDIM];  /* sizes, each >= 0; unused slots are 0 */
    size_t begin, end;              /* byte range [begin, end) within the data section */
} lpnx_st_entry;

/* One "__metadata__" pair; both strings are UTF-8 without embedded NUL. */
typedef struct {
    char *key;
    char *value;
} lpnx_st_meta;

/* A parsed file image. */
typedef struct {
    const unsigned char *data;  /* start of the data section (points into the caller's bytes) */
    size_t data_len;            /* bytes in the data section */
    lpnx_st_entry *entries;     /* tensors, sorted by (begin, end, name) */
    size_t n_entries;
    lpnx_st_meta *meta;         /* metadata pairs, in header order */
    size_t n_meta;
} lpnx_st_file;

/* Parses a whole file image of len bytes. f is overwritten (its previous
 * contents are not freed). On error returns non-zero, leaves f zeroed and
 * writes the reason into err (at most errlen bytes, NUL-terminated; err may
 * be NULL). On success f owns entries/meta (release with lpnx_st_free) and
 * f->data points into bytes, which the caller keeps alive.
 *
 * Guarantees on success: every entry's [begin, end) lies inside the data
 * section, end - begin == numel * dtype size, and the product of
 * max(shape[k], 1) over all dims fits in int64_t and in size_t. */
int lpnx_st_parse(lpnx_st_file *f, const unsigned char *bytes, size_t len, char *err, size_t errlen);

/* Frees what lpnx_st_parse allocated and zeroes f; safe on a zeroed or
 * already-freed struct and on NULL. */
void lpnx_st_free(lpnx_st_file *f);

/* Bytes per element (0 for a value outside the enum). */
size_t lpnx_st_dtype_size(lpnx_st_dtype dt);

/* The header spelling of a dtype ("F32", "BF16", ...; "?" outside the enum). */
const char *lpnx_st_dtype_name(lpnx_st_dtype dt);

/* Converts one entry's elements to float32. dst holds numel floats (numel =
 * (end - begin) / dtype size for a parsed entry). F16 handles subnormals,
 * infinities and NaN; BF16 is exact; F64 rounds to nearest (overflow gives
 * +-inf); integers round to nearest; BOOL gives 1 for any non-zero byte.
 * Does nothing if e's range does not lie inside f's data section. */
void lpnx_st_to_f32(float *dst, const lpnx_st_file *f, const lpnx_st_entry *e);

/* Converts n little-endian elements of dtype at src to float32, by the
 * rules of lpnx_st_to_f32 (which calls it). */
void lpnx_st_convert_f32(float *dst, const unsigned char *src, size_t n, lpnx_st_dtype dtype);

/* One float32 tensor to write. data may be NULL only when numel == 0. */
typedef struct {
    const char *name;               /* UTF-8, unique, not "__metadata__" */
    const float *data;              /* numel contiguous floats (row-major) */
    int ndim;                       /* 0..LPNX_ST_MAXDIM; 0 = scalar */
    int64_t shape[LPNX_ST_MAXDIM];  /* sizes, each >= 0 */
} lpnx_st_out;

/* Writes F32 tensors atomically: a temp file path + ".lpnx-tmp.XXXXXX" in the
 * same folder is written, flushed, fsync'ed and renamed over path, then the
 * folder is fsync'ed. Tensors are stored sorted by name (byte order) with
 * contiguous data in that order; "__metadata__" comes first when n_meta > 0;
 * the header is space-padded to a multiple of 8 bytes. The new file gets the
 * permission bits of the file it replaces, or 0644.
 *
 * On any failure (bad arguments, duplicate names, I/O errors such as a short
 * write on a full disk) the temp file is removed, an existing file at path
 * is left untouched, non-zero is returned and err holds
 * "path: reason (strerror)". The one exception: if only the final fsync of
 * the folder fails, the new file is already in place, 1 is returned and the
 * message says so. */
int lpnx_st_write(const char *path, const lpnx_st_out *tensors, size_t n,
                  const char *const *meta_keys, const char *const *meta_values, size_t n_meta,
                  char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* LPNX_IO_SAFETENSORS_H */
