/* The restricted unpickler: see pickle.h. */
#include "pickle.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- memory: every allocation of a parse, freed together ------------- */

typedef struct chunk {
    struct chunk *next;
    union {
        long double ld;
        void *p;
        int64_t i;
    } data[];
} chunk;

typedef struct {
    chunk *chunks;
    size_t values;
} arena;

static void *arena_alloc(arena *a, size_t n) {
    chunk *c;
    if (n > SIZE_MAX - sizeof(chunk))
        return NULL;
    c = (chunk *)malloc(sizeof(chunk) + (n ? n : 1));
    if (c == NULL)
        return NULL;
    c->next = a->chunks;
    a->chunks = c;
    return c->data;
}

static void arena_release(arena *a) {
    chunk *c = a->chunks;
    while (c != NULL) {
        chunk *next = c->next;
        free(c);
        c = next;
    }
    a->chunks = NULL;
}

/* ---- the parser's state ---------------------------------------------- */

enum {
    G_ORDERED_DICT = 1, G_REBUILD_TENSOR_V2, G_REBUILD_PARAMETER, G_TORCH_SIZE, G_STORAGE, G_DTYPE,
    G_NP_SCALAR,   /* numpy.core.multiarray.scalar(dtype, bytes) -> a number */
    G_NP_DTYPE,    /* numpy.dtype(name, align, copy) -> a dtype value */
    G_NP_DTYPE_V,  /* such a dtype value; BUILD sets its byte order */
    G_CODECS_ENCODE /* _codecs.encode(str, "latin1") -> bytes (protocol 2's bytes) */
};

typedef struct {
    const unsigned char *buf;
    size_t len, pos, op_at;
    arena mem;
    lpnx_pk_value **stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t nmarks, marks_cap;
    lpnx_pk_value **memo;
    size_t memo_cap, memo_count;    /* slots; distinct indices stored (MEMOIZE's next) */
    char *err;
    size_t errlen;
    int failed;
} parser;

static int fail(parser *p, const char *fmt, ...) {
    if (!p->failed && p->err != NULL && p->errlen > 0) {
        char msg[400];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(p->err, p->errlen, "pickle: at byte %zu: %s", p->op_at, msg);
    }
    p->failed = 1;
    return -1;
}

static lpnx_pk_value *new_value(parser *p, lpnx_pk_kind kind) {
    lpnx_pk_value *v;
    if (p->mem.values >= LPNX_PK_MAX_VALUES) {
        fail(p, "more than %u values", (unsigned)LPNX_PK_MAX_VALUES);
        return NULL;
    }
    v = (lpnx_pk_value *)arena_alloc(&p->mem, sizeof *v);
    if (v == NULL) {
        fail(p, "out of memory");
        return NULL;
    }
    memset(v, 0, sizeof *v);
    v->kind = kind;
    p->mem.values++;
    return v;
}

/* Grows an array of n_have elements of size elem to hold at least need. */
static int grow(parser *p, void **arr, size_t *cap, size_t need, size_t elem) {
    size_t ncap;
    void *na;
    if (need <= *cap)
        return 0;
    ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / elem)
            return fail(p, "out of memory");
        ncap *= 2;
    }
    na = realloc(*arr, ncap * elem);
    if (na == NULL)
        return fail(p, "out of memory");
    *arr = na;
    *cap = ncap;
    return 0;
}

static int push(parser *p, lpnx_pk_value *v) {
    if (v == NULL)
        return -1;
    if (grow(p, (void **)&p->stack, &p->stack_cap, p->sp + 1, sizeof *p->stack))
        return -1;
    p->stack[p->sp++] = v;
    return 0;
}

/* The values above the topmost mark: their count, and they are at
 * stack[sp - count .. sp); pop_mark then drops them and the mark. */
static int since_mark(parser *p, size_t *count) {
    size_t at;
    if (p->nmarks == 0)
        return fail(p, "no MARK before this opcode");
    at = p->marks[p->nmarks - 1];
    if (at > p->sp)
        return fail(p, "the stack was popped below its MARK");
    *count = p->sp - at;
    return 0;
}

static void pop_mark(parser *p, size_t count) {
    p->sp -= count;
    p->nmarks--;
}

static lpnx_pk_value *top(parser *p, const char *what) {
    if (p->sp == 0) {
        fail(p, "%s on an empty stack", what);
        return NULL;
    }
    return p->stack[p->sp - 1];
}

static lpnx_pk_value *pop(parser *p, const char *what) {
    lpnx_pk_value *v = top(p, what);
    if (v != NULL) {
        if (p->nmarks > 0 && p->marks[p->nmarks - 1] >= p->sp) {
            fail(p, "%s would pop across a MARK", what);
            return NULL;
        }
        p->sp--;
    }
    return v;
}

static int need(parser *p, size_t n) {
    if (n > p->len - p->pos)
        return fail(p, "the pickle ends inside an opcode's argument (%zu bytes wanted, %zu left)", n,
                    p->len - p->pos);
    return 0;
}

static uint64_t read_le(parser *p, size_t n) {
    uint64_t v = 0;
    size_t i;
    for (i = 0; i < n; i++)
        v |= (uint64_t)p->buf[p->pos + i] << (8 * i);
    p->pos += n;
    return v;
}

static lpnx_pk_value *new_seq(parser *p, lpnx_pk_kind kind, size_t n) {
    lpnx_pk_value *v = new_value(p, kind);
    if (v == NULL)
        return NULL;
    if (n > 0) {
        if (n > SIZE_MAX / sizeof(lpnx_pk_value *)) {
            fail(p, "out of memory");
            return NULL;
        }
        v->u.seq.items = (lpnx_pk_value **)arena_alloc(&p->mem, n * sizeof(lpnx_pk_value *));
        if (v->u.seq.items == NULL) {
            fail(p, "out of memory");
            return NULL;
        }
    }
    v->u.seq.cap = n;
    return v;
}

/* Appends to a list or dict (which grow inside the arena, doubling). */
static int seq_add(parser *p, lpnx_pk_value *s, lpnx_pk_value *item) {
    if (s->u.seq.n == s->u.seq.cap) {
        size_t ncap = s->u.seq.cap ? s->u.seq.cap * 2 : 8;
        lpnx_pk_value **na;
        if (ncap > SIZE_MAX / sizeof *na)
            return fail(p, "out of memory");
        na = (lpnx_pk_value **)arena_alloc(&p->mem, ncap * sizeof *na);
        if (na == NULL)
            return fail(p, "out of memory");
        if (s->u.seq.n > 0)
            memcpy(na, s->u.seq.items, s->u.seq.n * sizeof *na);
        s->u.seq.items = na;
        s->u.seq.cap = ncap;
    }
    s->u.seq.items[s->u.seq.n++] = item;
    return 0;
}

static lpnx_pk_value *new_str(parser *p, const unsigned char *s, size_t n, lpnx_pk_kind kind) {
    lpnx_pk_value *v = new_value(p, kind);
    char *copy;
    if (v == NULL)
        return NULL;
    copy = (char *)arena_alloc(&p->mem, n + 1);
    if (copy == NULL) {
        fail(p, "out of memory");
        return NULL;
    }
    if (n > 0)
        memcpy(copy, s, n);
    copy[n] = '\0';
    v->u.str.s = copy;
    v->u.str.len = n;
    return v;
}

/* ---- the allowed globals --------------------------------------------- */

static const struct {
    const char *name;
    lpnx_pk_dtype dtype;
} storages[] = {
    {"FloatStorage", LPNX_PK_F32}, {"HalfStorage", LPNX_PK_F16},  {"BFloat16Storage", LPNX_PK_BF16},
    {"DoubleStorage", LPNX_PK_F64}, {"LongStorage", LPNX_PK_I64}, {"IntStorage", LPNX_PK_I32},
    {"ShortStorage", LPNX_PK_I16}, {"CharStorage", LPNX_PK_I8},  {"ByteStorage", LPNX_PK_U8},
    {"BoolStorage", LPNX_PK_BOOL_T},
};

static const struct {
    const char *name;
    lpnx_pk_dtype dtype;
} dtypes[] = {
    {"float32", LPNX_PK_F32}, {"float", LPNX_PK_F32},   {"float16", LPNX_PK_F16}, {"half", LPNX_PK_F16},
    {"bfloat16", LPNX_PK_BF16}, {"float64", LPNX_PK_F64}, {"double", LPNX_PK_F64}, {"int64", LPNX_PK_I64},
    {"long", LPNX_PK_I64},    {"int32", LPNX_PK_I32},   {"int", LPNX_PK_I32},     {"int16", LPNX_PK_I16},
    {"short", LPNX_PK_I16},   {"int8", LPNX_PK_I8},     {"uint8", LPNX_PK_U8},    {"bool", LPNX_PK_BOOL_T},
};

static int same(const unsigned char *s, size_t n, const char *lit) {
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* Prints at most 80 bytes of s, with anything outside printable ASCII as '?'. */
static void printable(char *out, size_t outlen, const unsigned char *s, size_t n) {
    size_t i, k = 0;
    for (i = 0; i < n && k + 4 < outlen && i < 80; i++)
        out[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    if (i < n && k + 4 < outlen) {
        out[k++] = '.';
        out[k++] = '.';
        out[k++] = '.';
    }
    out[k] = '\0';
}

static lpnx_pk_value *global(parser *p, const unsigned char *mod, size_t modn, const unsigned char *name,
                             size_t namen) {
    lpnx_pk_value *v;
    int which = 0;
    lpnx_pk_dtype dt = LPNX_PK_F32;
    size_t i;
    if (same(mod, modn, "collections") && same(name, namen, "OrderedDict"))
        which = G_ORDERED_DICT;
    else if (same(mod, modn, "torch._utils") && same(name, namen, "_rebuild_tensor_v2"))
        which = G_REBUILD_TENSOR_V2;
    else if (same(mod, modn, "torch._utils") && same(name, namen, "_rebuild_parameter"))
        which = G_REBUILD_PARAMETER;
    else if (same(mod, modn, "torch") && same(name, namen, "Size"))
        which = G_TORCH_SIZE;
    else if ((same(mod, modn, "numpy.core.multiarray") || same(mod, modn, "numpy._core.multiarray")) &&
             same(name, namen, "scalar"))
        which = G_NP_SCALAR;
    else if (same(mod, modn, "numpy") && same(name, namen, "dtype"))
        which = G_NP_DTYPE;
    else if (same(mod, modn, "_codecs") && same(name, namen, "encode"))
        which = G_CODECS_ENCODE;
    else if (same(mod, modn, "torch")) {
        for (i = 0; i < sizeof storages / sizeof storages[0] && !which; i++)
            if (same(name, namen, storages[i].name)) {
                which = G_STORAGE;
                dt = storages[i].dtype;
            }
        for (i = 0; i < sizeof dtypes / sizeof dtypes[0] && !which; i++)
            if (same(name, namen, dtypes[i].name)) {
                which = G_DTYPE;
                dt = dtypes[i].dtype;
            }
    }
    if (!which) {
        char m[100], n[100];
        printable(m, sizeof m, mod, modn);
        printable(n, sizeof n, name, namen);
        fail(p, "global %s.%s is not allowed: only tensors, storages, OrderedDict, torch.Size and numpy "
                "scalars are read, and nothing is ever called",
             m, n);
        return NULL;
    }
    v = new_value(p, LPNX_PK_GLOBAL);
    if (v != NULL) {
        v->u.global.which = which;
        v->u.global.dtype = dt;
    }
    return v;
}

/* ---- REDUCE, BINPERSID and BUILD ------------------------------------- */

static int int_of(parser *p, const lpnx_pk_value *v, const char *what, int64_t *out) {
    if (v->kind != LPNX_PK_INT)
        return fail(p, "%s must be an integer", what);
    *out = v->u.i;
    return 0;
}

static int int_tuple(parser *p, const lpnx_pk_value *v, const char *what, int64_t *out, int *n) {
    size_t i;
    if (v->kind != LPNX_PK_TUPLE && v->kind != LPNX_PK_LIST)
        return fail(p, "a tensor's %s must be a tuple of integers", what);
    if (v->u.seq.n > LPNX_PK_MAXDIM)
        return fail(p, "a tensor's %s has %zu dimensions (at most %d)", what, v->u.seq.n, LPNX_PK_MAXDIM);
    for (i = 0; i < v->u.seq.n; i++) {
        if (int_of(p, v->u.seq.items[i], what, &out[i]))
            return -1;
        if (out[i] < 0)
            return fail(p, "a tensor's %s holds the negative value %lld", what, (long long)out[i]);
    }
    *n = (int)v->u.seq.n;
    return 0;
}

static lpnx_pk_value *rebuild_tensor(parser *p, lpnx_pk_value *args) {
    lpnx_pk_value *t, *st;
    int64_t size[LPNX_PK_MAXDIM] = {0}, stride[LPNX_PK_MAXDIM] = {0}, offset = 0, last;
    int nd = 0, ns = 0, d, empty = 0;
    if (args->u.seq.n < 4)
        return fail(p, "_rebuild_tensor_v2 wants (storage, offset, size, stride, ...), got %zu arguments",
                    args->u.seq.n),
               NULL;
    st = args->u.seq.items[0];
    if (st->kind != LPNX_PK_STORAGE)
        return fail(p, "_rebuild_tensor_v2's first argument is not a storage"), NULL;
    if (int_of(p, args->u.seq.items[1], "the storage offset", &offset) ||
        int_tuple(p, args->u.seq.items[2], "size", size, &nd) ||
        int_tuple(p, args->u.seq.items[3], "stride", stride, &ns))
        return NULL;
    if (offset < 0)
        return fail(p, "negative storage offset %lld", (long long)offset), NULL;
    if (nd != ns)
        return fail(p, "a tensor with %d sizes and %d strides", nd, ns), NULL;
    /* the last element a view reaches must lie inside its storage */
    last = offset;
    for (d = 0; d < nd; d++)
        if (size[d] == 0)
            empty = 1;
    if (!empty) {
        for (d = 0; d < nd; d++) {
            int64_t reach;
            if (stride[d] != 0 && size[d] - 1 > (INT64_MAX - last) / stride[d])
                return fail(p, "a tensor's sizes and strides overflow"), NULL;
            reach = (size[d] - 1) * stride[d];
            last += reach;
        }
        if (last >= st->u.storage.numel)
            return fail(p, "a tensor reaches element %lld of a storage of %lld", (long long)last,
                        (long long)st->u.storage.numel),
                   NULL;
    } else if (offset > st->u.storage.numel) {
        return fail(p, "storage offset %lld past a storage of %lld", (long long)offset,
                    (long long)st->u.storage.numel),
               NULL;
    }
    t = new_value(p, LPNX_PK_TENSOR);
    if (t == NULL)
        return NULL;
    t->u.tensor.storage = st;
    t->u.tensor.offset = offset;
    t->u.tensor.ndim = nd;
    memcpy(t->u.tensor.size, size, sizeof size);
    memcpy(t->u.tensor.stride, stride, sizeof stride);
    return t;
}

/* numpy's dtype names for the element types a scalar may have */
static const struct {
    const char *name;
    lpnx_pk_dtype dtype;
} np_dtypes[] = {{"f8", LPNX_PK_F64}, {"f4", LPNX_PK_F32}, {"f2", LPNX_PK_F16}, {"i8", LPNX_PK_I64},
                 {"i4", LPNX_PK_I32}, {"i2", LPNX_PK_I16}, {"i1", LPNX_PK_I8},  {"u1", LPNX_PK_U8},
                 {"b1", LPNX_PK_BOOL_T}};

static lpnx_pk_value *np_dtype(parser *p, const lpnx_pk_value *args) {
    lpnx_pk_value *v;
    size_t i;
    const lpnx_pk_value *name = args->u.seq.n >= 1 ? args->u.seq.items[0] : NULL;
    if (name == NULL || name->kind != LPNX_PK_STR)
        return fail(p, "numpy.dtype wants a type name"), NULL;
    for (i = 0; i < sizeof np_dtypes / sizeof np_dtypes[0]; i++)
        if (same((const unsigned char *)name->u.str.s, name->u.str.len, np_dtypes[i].name)) {
            if ((v = new_value(p, LPNX_PK_GLOBAL)) == NULL)
                return NULL;
            v->u.global.which = G_NP_DTYPE_V;
            v->u.global.dtype = np_dtypes[i].dtype;
            v->u.global.big_endian = 0;
            return v;
        }
    {
        char n[40];
        printable(n, sizeof n, (const unsigned char *)name->u.str.s, name->u.str.len);
        return fail(p, "a numpy scalar of dtype '%s' is not read (only numbers and booleans)", n), NULL;
    }
}

/* _codecs.encode(str, "latin1"): each code point of the UTF-8 text below 256 as one byte */
static lpnx_pk_value *latin1(parser *p, const lpnx_pk_value *args) {
    const lpnx_pk_value *text, *enc;
    unsigned char *out;
    size_t i = 0, k = 0, n;
    if (args->u.seq.n != 2 || (text = args->u.seq.items[0])->kind != LPNX_PK_STR ||
        (enc = args->u.seq.items[1])->kind != LPNX_PK_STR ||
        !(same((const unsigned char *)enc->u.str.s, enc->u.str.len, "latin1") ||
          same((const unsigned char *)enc->u.str.s, enc->u.str.len, "latin-1")))
        return fail(p, "_codecs.encode is read for (text, 'latin1') only"), NULL;
    n = text->u.str.len;
    if ((out = (unsigned char *)arena_alloc(&p->mem, n + 1)) == NULL)
        return fail(p, "out of memory"), NULL;
    while (i < n) {
        unsigned char c = (unsigned char)text->u.str.s[i];
        if (c < 0x80) {
            out[k++] = c;
            i++;
        } else if ((c == 0xc2 || c == 0xc3) && i + 1 < n) {
            out[k++] = (unsigned char)(((c & 0x03) << 6) | ((unsigned char)text->u.str.s[i + 1] & 0x3f));
            i += 2;
        } else {
            return fail(p, "_codecs.encode: text that is not latin-1"), NULL;
        }
    }
    return new_str(p, out, k, LPNX_PK_BYTES);
}

/* numpy.core.multiarray.scalar(dtype, bytes): the number the bytes hold */
static lpnx_pk_value *np_scalar(parser *p, const lpnx_pk_value *args) {
    const lpnx_pk_value *dt, *raw;
    lpnx_pk_value *v;
    unsigned char b[8] = {0};
    size_t size;
    uint64_t u = 0;
    int i;
    if (args->u.seq.n != 2 || (dt = args->u.seq.items[0])->kind != LPNX_PK_GLOBAL ||
        dt->u.global.which != G_NP_DTYPE_V || (raw = args->u.seq.items[1])->kind != LPNX_PK_BYTES)
        return fail(p, "numpy scalar wants (dtype, bytes)"), NULL;
    size = lpnx_pk_dtype_size(dt->u.global.dtype);
    if (raw->u.str.len != size)
        return fail(p, "a numpy %s scalar of %zu bytes", lpnx_pk_dtype_name(dt->u.global.dtype), raw->u.str.len),
               NULL;
    for (i = 0; i < (int)size; i++)
        b[i] = (unsigned char)raw->u.str.s[dt->u.global.big_endian ? (int)size - 1 - i : i];
    for (i = (int)size - 1; i >= 0; i--)
        u = (u << 8) | b[i];
    switch (dt->u.global.dtype) {
    case LPNX_PK_F64: {
        double d;
        memcpy(&d, &u, 8);
        v = new_value(p, LPNX_PK_FLOAT);
        if (v) v->u.f = d;
        return v;
    }
    case LPNX_PK_F32: {
        float f;
        uint32_t w = (uint32_t)u;
        memcpy(&f, &w, 4);
        v = new_value(p, LPNX_PK_FLOAT);
        if (v) v->u.f = f;
        return v;
    }
    case LPNX_PK_F16: { /* sign, 5-bit exponent, 10-bit fraction */
        int e = (int)((u >> 10) & 0x1f), frac = (int)(u & 0x3ff);
        double d = e == 0 ? ldexp(frac, -24) : e == 31 ? (frac ? NAN : INFINITY) : ldexp(frac + 1024, e - 25);
        v = new_value(p, LPNX_PK_FLOAT);
        if (v) v->u.f = (u & 0x8000) ? -d : d;
        return v;
    }
    case LPNX_PK_BOOL_T:
        v = new_value(p, LPNX_PK_BOOL);
        if (v) v->u.b = u != 0;
        return v;
    case LPNX_PK_U8:
        v = new_value(p, LPNX_PK_INT);
        if (v) v->u.i = (int64_t)u;
        return v;
    default: { /* signed integers of 1-8 bytes: sign-extend */
        int64_t x = (int64_t)(size < 8 && (u >> (8 * size - 1)) ? (u | (~UINT64_C(0) << (8 * size))) : u);
        v = new_value(p, LPNX_PK_INT);
        if (v) v->u.i = x;
        return v;
    }
    }
}

static int reduce(parser *p) {
    lpnx_pk_value *args = pop(p, "REDUCE"), *fn, *r = NULL;
    if (args == NULL || (fn = pop(p, "REDUCE")) == NULL)
        return -1;
    if (fn->kind != LPNX_PK_GLOBAL)
        return fail(p, "REDUCE calls something that is not an allowed global");
    if (args->kind != LPNX_PK_TUPLE)
        return fail(p, "REDUCE's arguments are not a tuple");
    switch (fn->u.global.which) {
    case G_ORDERED_DICT:
        if (args->u.seq.n != 0)
            return fail(p, "OrderedDict is built from () only");
        r = new_seq(p, LPNX_PK_DICT, 0);
        break;
    case G_REBUILD_TENSOR_V2:
        r = rebuild_tensor(p, args);
        break;
    case G_REBUILD_PARAMETER:
        if (args->u.seq.n < 1 || args->u.seq.items[0]->kind != LPNX_PK_TENSOR)
            return fail(p, "_rebuild_parameter wants a tensor");
        r = args->u.seq.items[0];
        break;
    case G_TORCH_SIZE:
        if (args->u.seq.n != 1 || args->u.seq.items[0]->kind != LPNX_PK_TUPLE)
            return fail(p, "torch.Size wants one tuple");
        r = args->u.seq.items[0];
        break;
    case G_NP_DTYPE:
        r = np_dtype(p, args);
        break;
    case G_NP_SCALAR:
        r = np_scalar(p, args);
        break;
    case G_CODECS_ENCODE:
        r = latin1(p, args);
        break;
    default:
        return fail(p, "a storage class or dtype is called");
    }
    return push(p, r);
}

static int persid(parser *p) {
    lpnx_pk_value *pid = pop(p, "BINPERSID"), *v, **it;
    size_t i;
    if (pid == NULL)
        return -1;
    /* the zip format's ids have 5 items; the legacy format adds a 6th,
     * view_metadata, None unless the tensor views a slice of a storage */
    if (pid->kind != LPNX_PK_TUPLE || (pid->u.seq.n != 5 && pid->u.seq.n != 6))
        return fail(p, "a persistent id is not ('storage', class, key, location, numel)");
    it = pid->u.seq.items;
    if (pid->u.seq.n == 6 && it[5]->kind != LPNX_PK_NONE)
        return fail(p, "a storage view of the legacy format (view_metadata) is not read");
    if (it[0]->kind != LPNX_PK_STR || !same((const unsigned char *)it[0]->u.str.s, it[0]->u.str.len, "storage"))
        return fail(p, "a persistent id that is not a storage");
    if (it[1]->kind != LPNX_PK_GLOBAL ||
        (it[1]->u.global.which != G_STORAGE && it[1]->u.global.which != G_DTYPE))
        return fail(p, "a storage whose class is not a torch storage or dtype");
    if (it[2]->kind != LPNX_PK_STR || it[2]->u.str.len == 0 || it[2]->u.str.len > 64)
        return fail(p, "a storage key must be a short string");
    for (i = 0; i < it[2]->u.str.len; i++) {
        char c = it[2]->u.str.s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'))
            return fail(p, "a storage key may hold letters, digits and '_' only");
    }
    if (it[4]->kind != LPNX_PK_INT || it[4]->u.i < 0)
        return fail(p, "a storage's element count must be an integer >= 0");
    v = new_value(p, LPNX_PK_STORAGE);
    if (v == NULL)
        return -1;
    v->u.storage.dtype = it[1]->u.global.dtype;
    v->u.storage.key = it[2]->u.str.s;
    v->u.storage.key_len = it[2]->u.str.len;
    v->u.storage.numel = it[4]->u.i;
    return push(p, v);
}

static int build(parser *p) {
    lpnx_pk_value *state = pop(p, "BUILD"), *obj;
    if (state == NULL || (obj = top(p, "BUILD")) == NULL)
        return -1;
    if (obj->kind == LPNX_PK_GLOBAL && obj->u.global.which == G_NP_DTYPE_V) {
        /* a numpy dtype's state: (version, byte order '<' '>' '|' '=', ...) */
        const lpnx_pk_value *order = state->kind == LPNX_PK_TUPLE && state->u.seq.n >= 2 ? state->u.seq.items[1] : NULL;
        if (order == NULL || order->kind != LPNX_PK_STR || order->u.str.len != 1)
            return fail(p, "a numpy dtype's state without a byte order");
        obj->u.global.big_endian = order->u.str.s[0] == '>';
        return 0;
    }
    if (obj->kind != LPNX_PK_DICT)
        return fail(p, "BUILD sets attributes of something other than an OrderedDict");
    return 0; /* an OrderedDict's attributes (_metadata): read, dropped */
}

/* ---- the opcode loop ------------------------------------------------- */

static int memo_put(parser *p, uint64_t idx) {
    lpnx_pk_value *v = top(p, "a memo store");
    if (v == NULL)
        return -1;
    if (idx >= p->len)
        return fail(p, "memo index %llu beyond what a pickle of %zu bytes holds", (unsigned long long)idx, p->len);
    if (idx >= p->memo_cap) {
        size_t old = p->memo_cap;
        if (grow(p, (void **)&p->memo, &p->memo_cap, (size_t)idx + 1, sizeof *p->memo))
            return -1;
        memset(p->memo + old, 0, (p->memo_cap - old) * sizeof *p->memo);
    }
    if (p->memo[idx] == NULL)
        p->memo_count++;
    p->memo[idx] = v;
    return 0;
}

static int memo_get(parser *p, uint64_t idx) {
    if (idx >= p->memo_cap || p->memo[idx] == NULL)
        return fail(p, "memo index %llu was never stored", (unsigned long long)idx);
    return push(p, p->memo[idx]);
}

static int tuple_of(parser *p, size_t n) {
    lpnx_pk_value *t;
    size_t i;
    if (n > p->sp)
        return fail(p, "a TUPLE%zu on a stack of %zu", n, p->sp);
    if (p->nmarks > 0 && p->marks[p->nmarks - 1] > p->sp - n)
        return fail(p, "a TUPLE%zu would take values across a MARK", n);
    t = new_seq(p, LPNX_PK_TUPLE, n);
    if (t == NULL)
        return -1;
    for (i = 0; i < n; i++)
        t->u.seq.items[i] = p->stack[p->sp - n + i];
    t->u.seq.n = n;
    p->sp -= n;
    return push(p, t);
}

/* A tuple, list or dict of the count values above the last MARK, which it pops. */
static int push_marked(parser *p, lpnx_pk_kind kind, size_t count) {
    size_t i;
    lpnx_pk_value *v = new_seq(p, kind, count);
    if (v == NULL)
        return -1;
    for (i = 0; i < count; i++)
        v->u.seq.items[i] = p->stack[p->sp - count + i];
    v->u.seq.n = count;
    pop_mark(p, count);
    return push(p, v);
}

static int step(parser *p, int *done) {
    unsigned char op;
    uint64_t n;
    size_t count, i;
    lpnx_pk_value *v, *c;
    p->op_at = p->pos;
    if (p->pos >= p->len)
        return fail(p, "the pickle ends without STOP");
    op = p->buf[p->pos++];
    switch (op) {
    case 0x80: /* PROTO */
        if (need(p, 1))
            return -1;
        if (p->buf[p->pos] > 5)
            return fail(p, "pickle protocol %d (at most 5 is known)", p->buf[p->pos]);
        p->pos++;
        return 0;
    case 0x95: /* FRAME: a length; the frame's opcodes follow as usual */
        if (need(p, 8))
            return -1;
        p->pos += 8;
        return 0;
    case '.': /* STOP */
        *done = 1;
        return 0;
    case '(': /* MARK */
        if (p->nmarks >= LPNX_PK_MAX_DEPTH)
            return fail(p, "more than %d nested MARKs", LPNX_PK_MAX_DEPTH);
        if (grow(p, (void **)&p->marks, &p->marks_cap, p->nmarks + 1, sizeof *p->marks))
            return -1;
        p->marks[p->nmarks++] = p->sp;
        return 0;
    case '0': /* POP */
        return pop(p, "POP") ? 0 : -1;
    case '1': /* POP_MARK */
        if (since_mark(p, &count))
            return -1;
        pop_mark(p, count);
        return 0;
    case '2': /* DUP */
        v = top(p, "DUP");
        return v ? push(p, v) : -1;
    case 'N':
        return push(p, new_value(p, LPNX_PK_NONE));
    case 0x88: /* NEWTRUE */
    case 0x89: /* NEWFALSE */
        v = new_value(p, LPNX_PK_BOOL);
        if (v)
            v->u.b = op == 0x88;
        return push(p, v);
    case 'J': /* BININT */
    case 'K': /* BININT1 */
    case 'M': /* BININT2 */
        n = op == 'J' ? 4 : op == 'K' ? 1 : 2;
        if (need(p, (size_t)n))
            return -1;
        v = new_value(p, LPNX_PK_INT);
        if (v) {
            uint64_t raw = read_le(p, (size_t)n);
            v->u.i = op == 'J' ? (int64_t)(int32_t)(uint32_t)raw : (int64_t)raw;
        }
        return push(p, v);
    case 0x8a: /* LONG1 */
    case 0x8b: /* LONG4 */
        if (need(p, op == 0x8a ? 1 : 4))
            return -1;
        n = read_le(p, op == 0x8a ? 1 : 4);
        if (n > 8)
            return fail(p, "an integer of %llu bytes (at most 8 are read)", (unsigned long long)n);
        if (need(p, (size_t)n))
            return -1;
        v = new_value(p, LPNX_PK_INT);
        if (v) {
            uint64_t raw = read_le(p, (size_t)n);
            if (n > 0 && n < 8 && (raw >> (8 * n - 1)) & 1)
                raw |= ~(uint64_t)0 << (8 * n); /* two's complement: extend the sign */
            v->u.i = (int64_t)raw;
        }
        return push(p, v);
    case 'G': /* BINFLOAT: 8 bytes, big-endian */
        if (need(p, 8))
            return -1;
        v = new_value(p, LPNX_PK_FLOAT);
        if (v) {
            uint64_t raw = 0;
            double d;
            for (i = 0; i < 8; i++)
                raw = (raw << 8) | p->buf[p->pos + i];
            memcpy(&d, &raw, sizeof d);
            v->u.f = d;
        }
        p->pos += 8;
        return push(p, v);
    case 'X':  /* BINUNICODE */
    case 0x8c: /* SHORT_BINUNICODE */
    case 'T':  /* BINSTRING */
    case 'U':  /* SHORT_BINSTRING */
    case 'B':  /* BINBYTES */
    case 'C':  /* SHORT_BINBYTES */
        count = (op == 0x8c || op == 'U' || op == 'C') ? 1 : 4;
        if (need(p, count))
            return -1;
        n = read_le(p, count);
        if (need(p, (size_t)n))
            return -1;
        v = new_str(p, p->buf + p->pos, (size_t)n, (op == 'B' || op == 'C') ? LPNX_PK_BYTES : LPNX_PK_STR);
        p->pos += (size_t)n;
        return push(p, v);
    case ')': /* EMPTY_TUPLE */
        return push(p, new_seq(p, LPNX_PK_TUPLE, 0));
    case 0x85: /* TUPLE1 */
    case 0x86: /* TUPLE2 */
    case 0x87: /* TUPLE3 */
        return tuple_of(p, (size_t)(op - 0x84));
    case 't': /* TUPLE */
    case 'l': /* LIST */
        if (since_mark(p, &count))
            return -1;
        return push_marked(p, op == 't' ? LPNX_PK_TUPLE : LPNX_PK_LIST, count);
    case ']': /* EMPTY_LIST */
        return push(p, new_seq(p, LPNX_PK_LIST, 0));
    case '}': /* EMPTY_DICT */
        return push(p, new_seq(p, LPNX_PK_DICT, 0));
    case 'd': /* DICT */
        if (since_mark(p, &count))
            return -1;
        if (count % 2)
            return fail(p, "DICT with an odd number of keys and values");
        return push_marked(p, LPNX_PK_DICT, count);
    case 'a': /* APPEND */
        v = pop(p, "APPEND");
        if (v == NULL || (c = top(p, "APPEND")) == NULL)
            return -1;
        if (c->kind != LPNX_PK_LIST)
            return fail(p, "APPEND to something that is not a list");
        return seq_add(p, c, v);
    case 'e': /* APPENDS */
    case 'u': /* SETITEMS */
        if (since_mark(p, &count))
            return -1;
        if (p->sp - count == 0)
            return fail(p, "%s with nothing to add to", op == 'e' ? "APPENDS" : "SETITEMS");
        c = p->stack[p->sp - count - 1];
        if (c->kind != (op == 'e' ? LPNX_PK_LIST : LPNX_PK_DICT))
            return fail(p, "%s on something that is not a %s", op == 'e' ? "APPENDS" : "SETITEMS",
                        op == 'e' ? "list" : "dict");
        if (op == 'u' && count % 2)
            return fail(p, "SETITEMS with an odd number of keys and values");
        for (i = 0; i < count; i++)
            if (seq_add(p, c, p->stack[p->sp - count + i]))
                return -1;
        pop_mark(p, count);
        return 0;
    case 's': /* SETITEM */
        v = pop(p, "SETITEM");
        c = v ? pop(p, "SETITEM") : NULL;
        if (c == NULL)
            return -1;
        {
            lpnx_pk_value *d = top(p, "SETITEM");
            if (d == NULL)
                return -1;
            if (d->kind != LPNX_PK_DICT)
                return fail(p, "SETITEM on something that is not a dict");
            if (seq_add(p, d, c) || seq_add(p, d, v))
                return -1;
        }
        return 0;
    case 'c': { /* GLOBAL: "module\nname\n" */
        const unsigned char *mod = p->buf + p->pos, *nl, *name, *nl2;
        nl = (const unsigned char *)memchr(mod, '\n', p->len - p->pos);
        if (nl == NULL)
            return fail(p, "GLOBAL without its module line");
        name = nl + 1;
        nl2 = (const unsigned char *)memchr(name, '\n', (size_t)(p->buf + p->len - name));
        if (nl2 == NULL)
            return fail(p, "GLOBAL without its name line");
        p->pos = (size_t)(nl2 + 1 - p->buf);
        return push(p, global(p, mod, (size_t)(nl - mod), name, (size_t)(nl2 - name)));
    }
    case 0x93: { /* STACK_GLOBAL */
        lpnx_pk_value *name = pop(p, "STACK_GLOBAL"), *mod = name ? pop(p, "STACK_GLOBAL") : NULL;
        if (mod == NULL)
            return -1;
        if (mod->kind != LPNX_PK_STR || name->kind != LPNX_PK_STR)
            return fail(p, "STACK_GLOBAL wants two strings");
        return push(p, global(p, (const unsigned char *)mod->u.str.s, mod->u.str.len,
                              (const unsigned char *)name->u.str.s, name->u.str.len));
    }
    case 'R': /* REDUCE */
        return reduce(p);
    case 'Q': /* BINPERSID */
        return persid(p);
    case 'b': /* BUILD */
        return build(p);
    case 'q': /* BINPUT */
    case 'r': /* LONG_BINPUT */
    case 'h': /* BINGET */
    case 'j': /* LONG_BINGET */
        count = (op == 'q' || op == 'h') ? 1 : 4;
        if (need(p, count))
            return -1;
        n = read_le(p, count);
        return (op == 'q' || op == 'r') ? memo_put(p, n) : memo_get(p, n);
    case 0x94: /* MEMOIZE */
        return memo_put(p, (uint64_t)p->memo_count);
    default:
        return fail(p, "opcode 0x%02x is not read (only the data opcodes that torch.save writes are)", op);
    }
}

int lpnx_pk_parse(const unsigned char *buf, size_t len, lpnx_pk_result *out, char *err, size_t errlen) {
    return lpnx_pk_parse_prefix(buf, len, out, NULL, err, errlen);
}

int lpnx_pk_parse_prefix(const unsigned char *buf, size_t len, lpnx_pk_result *out, size_t *used, char *err,
                         size_t errlen) {
    parser p;
    int done = 0;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (out == NULL)
        return -1;
    out->root = NULL;
    out->arena = NULL;
    memset(&p, 0, sizeof p);
    p.buf = buf;
    p.len = buf ? len : 0;
    p.err = err;
    p.errlen = errlen;
    while (!done)
        if (step(&p, &done))
            break;
    if (!p.failed) {
        if (p.nmarks != 0)
            fail(&p, "STOP with an open MARK");
        else if (p.sp != 1)
            fail(&p, "STOP with %zu values on the stack (1 expected)", p.sp);
    }
    if (!p.failed) {
        arena *keep = (arena *)malloc(sizeof *keep);
        if (keep == NULL) {
            fail(&p, "out of memory");
        } else {
            *keep = p.mem;
            out->arena = keep;
            out->root = p.stack[0];
            if (used != NULL)
                *used = p.pos;
        }
    }
    free(p.stack);
    free(p.marks);
    free(p.memo);
    if (p.failed) {
        arena_release(&p.mem);
        return -1;
    }
    return 0;
}

void lpnx_pk_free(lpnx_pk_result *r) {
    if (r == NULL)
        return;
    if (r->arena != NULL) {
        arena_release((arena *)r->arena);
        free(r->arena);
    }
    r->arena = NULL;
    r->root = NULL;
}

size_t lpnx_pk_dtype_size(lpnx_pk_dtype t) {
    switch (t) {
    case LPNX_PK_F64:
    case LPNX_PK_I64:
        return 8;
    case LPNX_PK_F32:
    case LPNX_PK_I32:
        return 4;
    case LPNX_PK_F16:
    case LPNX_PK_BF16:
    case LPNX_PK_I16:
        return 2;
    default:
        return 1;
    }
}

const char *lpnx_pk_dtype_name(lpnx_pk_dtype t) {
    static const char *names[] = {"float32", "float16", "bfloat16", "float64", "int64",
                                  "int32",   "int16",   "int8",     "uint8",   "bool"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}
