/* A restricted unpickler for what torch.save writes: it builds data and
 * never executes anything.
 *
 * It reads the opcodes of pickle protocols 0-2 that hold data (and PROTO,
 * FRAME-free protocol 2 is what torch.save uses), and knows a short list
 * of globals, each turned into data here:
 *
 *   collections.OrderedDict        () -> an empty dict
 *   torch._utils._rebuild_tensor_v2 (storage, offset, size, stride, requires_grad,
 *                                   hooks[, metadata]) -> a tensor (a view)
 *   torch._utils._rebuild_parameter (tensor, requires_grad, hooks) -> the tensor
 *   torch.Size                     (tuple) -> the tuple
 *   torch.<T>Storage               only inside a persistent id:
 *                                  ("storage", class, key, location, numel)
 *   torch.<dtype> (float32, ...)   a value naming an element type
 *   numpy.core.multiarray.scalar   (numpy.dtype(name, ...), bytes) -> the number
 *   numpy.dtype                    (name, align, copy) -> a dtype value (BUILD sets
 *                                  its byte order)
 *   _codecs.encode                 (text, "latin1") -> bytes (how protocol 2 writes
 *                                  the bytes of a numpy scalar)
 *
 * Any other global (os.system, builtins.eval, subprocess.Popen, ...) is an
 * error that names it, raised when the GLOBAL opcode is read, before
 * anything could call it. BUILD on a dict (an OrderedDict's attributes,
 * such as a state_dict's _metadata) is read and dropped.
 *
 * Plain C99, no Lua, no global state. Every size is checked against the
 * input's length and the limits below; every error is a message in the
 * caller's buffer. */
#ifndef LPNX_IO_PICKLE_H
#define LPNX_IO_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LPNX_PK_MAXDIM 8

typedef enum {
    LPNX_PK_NONE, LPNX_PK_BOOL, LPNX_PK_INT, LPNX_PK_FLOAT, LPNX_PK_STR, LPNX_PK_BYTES,
    LPNX_PK_TUPLE, LPNX_PK_LIST, LPNX_PK_DICT,
    LPNX_PK_GLOBAL,   /* an allowed global as a value (a storage class, a dtype, a callable) */
    LPNX_PK_STORAGE,  /* a persistent id: ("storage", class, key, location, numel) */
    LPNX_PK_TENSOR
} lpnx_pk_kind;

/* Element types of a storage. */
typedef enum {
    LPNX_PK_F32, LPNX_PK_F16, LPNX_PK_BF16, LPNX_PK_F64, LPNX_PK_I64, LPNX_PK_I32, LPNX_PK_I16,
    LPNX_PK_I8, LPNX_PK_U8, LPNX_PK_BOOL_T
} lpnx_pk_dtype;

typedef struct lpnx_pk_value lpnx_pk_value;

struct lpnx_pk_value {
    lpnx_pk_kind kind;
    union {
        int b;                   /* BOOL */
        int64_t i;               /* INT */
        double f;                /* FLOAT */
        struct {                 /* STR (UTF-8 as written), BYTES */
            const char *s;
            size_t len;
        } str;
        struct {                 /* TUPLE, LIST; DICT: 2n items, key then value, in insertion order */
            lpnx_pk_value **items;
            size_t n, cap;
        } seq;
        struct {                 /* GLOBAL */
            int which;           /* internal: which allowed global */
            lpnx_pk_dtype dtype; /* for a storage class, a dtype or a numpy dtype */
            int big_endian;      /* for a numpy dtype: its byte order */
        } global;
        struct {                 /* STORAGE */
            lpnx_pk_dtype dtype;
            const char *key;     /* the record's name under data/ */
            size_t key_len;
            int64_t numel;
        } storage;
        struct {                 /* TENSOR */
            lpnx_pk_value *storage;
            int64_t offset;
            int ndim;
            int64_t size[LPNX_PK_MAXDIM];
            int64_t stride[LPNX_PK_MAXDIM];
        } tensor;
    } u;
};

/* A parse: its root value and the memory behind every value. */
typedef struct {
    lpnx_pk_value *root;
    void *arena;                 /* internal */
} lpnx_pk_result;

/* Limits: the nesting depth of containers and the number of values. */
#define LPNX_PK_MAX_DEPTH 200
#define LPNX_PK_MAX_VALUES 50000000u

/* Parses len bytes of a pickle. On success returns 0 and fills out (free
 * with lpnx_pk_free; strings point into out's own memory, not into buf).
 * On error returns non-zero, leaves out empty and writes the reason,
 * with the byte offset of the opcode, into err (errlen bytes, may be 0). */
int lpnx_pk_parse(const unsigned char *buf, size_t len, lpnx_pk_result *out, char *err, size_t errlen);

/* The same for the pickle at the start of buf, which may be followed by
 * other bytes (the legacy format's pickles and storages follow each
 * other): *used gets the bytes up to and including its STOP. */
int lpnx_pk_parse_prefix(const unsigned char *buf, size_t len, lpnx_pk_result *out, size_t *used, char *err,
                         size_t errlen);
void lpnx_pk_free(lpnx_pk_result *r);

/* Bytes per element of a storage dtype, and its name ("float32", ...). */
size_t lpnx_pk_dtype_size(lpnx_pk_dtype t);
const char *lpnx_pk_dtype_name(lpnx_pk_dtype t);

#ifdef __cplusplus
}
#endif

#endif
