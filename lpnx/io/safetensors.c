/* safetensors reader and writer; see safetensors.h for the format and the
 * contracts.
 *
 * The header JSON is read and written by jansson. Reading is strict:
 * duplicate keys, trailing data, "\u0000" in strings and integers beyond
 * int64 are refused by jansson itself; the schema checks (fields, dtype,
 * shape against offsets, bounds) are here. Writing builds the object in the
 * order the file should have and dumps it compact, without sorting, so the
 * same tensors and metadata always give the same bytes.
 *
 * Byte order: the format is little-endian. All multi-byte values are
 * assembled from / split into single bytes with shifts, so the code does not
 * depend on the host byte order; floats are moved between integers and
 * float/double with memcpy (never through casted, possibly unaligned
 * pointers). The one assumption is that the host uses IEEE-754 binary32 and
 * binary64 with the same byte order as its integers, which holds on every
 * platform lpnx targets (x86-64, aarch64, both little-endian). */
#include "safetensors.h"

#include "file.h"

#include <float.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ST_SHOW_CAP 256     /* buffer size for a name quoted in a message */
#define ST_SHOW_BYTES 60    /* at most this many bytes of a name are quoted */

/* Bound on a tensor's byte count: it must fit int64_t and size_t. */
#define ST_COUNT_MAX ((uint64_t)INT64_MAX < (uint64_t)SIZE_MAX ? (uint64_t)INT64_MAX : (uint64_t)SIZE_MAX)

/* jansson flags for the header: keys must be unique; any value is parsed so
 * that a header that is not an object is named as such (then refused). No
 * JSON_DISABLE_EOF_CHECK (trailing data is an error) and no JSON_ALLOW_NUL. */
#define ST_JSON_LOAD (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)

#if defined(__GNUC__)
#define ST_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ST_PRINTF(a, b)
#endif

/* ------------------------------------------------------------------ */
/* small helpers                                                       */
/* ------------------------------------------------------------------ */

/* printf into the caller's error buffer; tolerates err == NULL / errlen == 0.
 * Returns -1, so that a check can end with `return st_err(...)`. */
static int st_err(char *err, size_t errlen, const char *fmt, ...) ST_PRINTF(3, 4);
static int st_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Renders bytes s[0..n) for quoting inside an error message: printable
 * ASCII and bytes >= 0x80 as they are, control bytes as \xNN, cut after
 * ST_SHOW_BYTES bytes (at a UTF-8 character boundary) with "...".
 * out must hold ST_SHOW_CAP bytes. Returns out. */
static const char *st_show(char *out, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t cut = n, i, o = 0;
    int cutoff = 0;
    if (cut > ST_SHOW_BYTES) {
        cut = ST_SHOW_BYTES;
        while (cut > 0 && (s[cut] & 0xC0u) == 0x80u)
            cut--;
        cutoff = 1;
    }
    for (i = 0; i < cut; i++) {
        unsigned char c = s[i];
        if (c < 0x20u || c == 0x7Fu) {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 0xFu];
        } else {
            out[o++] = (char)c;
        }
    }
    if (cutoff) {
        out[o++] = '.';
        out[o++] = '.';
        out[o++] = '.';
    }
    out[o] = '\0';
    return out;
}

/* st_show for a NUL-terminated string (NULL shows as "(null)"). */
static const char *st_show_cstr(char *out, const char *s)
{
    if (s == NULL)
        s = "(null)";
    return st_show(out, (const unsigned char *)s, strlen(s));
}

/* 1 if the NUL-terminated string s is well-formed UTF-8, by the check
 * jansson applies to every string it writes: json_string refuses
 * ill-formed text, json_string_nocheck fails only when out of memory (which
 * counts as valid here; building the header then reports it). */
static int st_utf8_valid(const char *s)
{
    json_t *v = json_string(s);
    int ok = v != NULL || (v = json_string_nocheck(s)) == NULL;
    json_decref(v);
    return ok;
}

static uint16_t st_le16(const unsigned char *p)
{
    return (uint16_t)((unsigned)p[0] | ((unsigned)p[1] << 8));
}

static uint32_t st_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t st_le64(const unsigned char *p)
{
    return (uint64_t)st_le32(p) | ((uint64_t)st_le32(p + 4) << 32);
}

static void st_put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v & 0xFFu);
    p[1] = (unsigned char)((v >> 8) & 0xFFu);
    p[2] = (unsigned char)((v >> 16) & 0xFFu);
    p[3] = (unsigned char)((v >> 24) & 0xFFu);
}

/* ------------------------------------------------------------------ */
/* dtypes                                                              */
/* ------------------------------------------------------------------ */

/* Header spelling and element size of each dtype, indexed by the enum. */
static const struct {
    const char *name;
    size_t size;
} st_dtypes[] = {
    {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8}, {"I64", 8},
    {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U8", 1},  {"BOOL", 1},
};
#define ST_N_DTYPES (sizeof st_dtypes / sizeof st_dtypes[0])

size_t lpnx_st_dtype_size(lpnx_st_dtype dt)
{
    return (unsigned)dt < ST_N_DTYPES ? st_dtypes[dt].size : 0;
}

const char *lpnx_st_dtype_name(lpnx_st_dtype dt)
{
    return (unsigned)dt < ST_N_DTYPES ? st_dtypes[dt].name : "?";
}

/* Finds the dtype spelled s; -1 if unknown. */
static int st_dtype_lookup(const char *s)
{
    size_t i;
    for (i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(st_dtypes[i].name, s) == 0)
            return (int)i;
    return -1;
}

/* Element count check shared by reader and writer: the product of
 * max(shape[k], 1) must not exceed limit (so that neither numel nor any
 * partial product of the sizes can overflow). Stores the real numel (0 if
 * some size is 0). Returns -1 on overflow; sizes must already be >= 0. */
static int st_numel(const int64_t *shape, int ndim, uint64_t limit, uint64_t *numel)
{
    uint64_t prod = 1, real = 1;
    int k;
    for (k = 0; k < ndim; k++) {
        uint64_t d = (uint64_t)shape[k];
        uint64_t d1 = d ? d : 1;
        if (prod > limit / d1)
            return -1;
        prod *= d1;
        real *= d;  /* real <= prod, cannot overflow */
    }
    *numel = real;
    return 0;
}

/* Formats a shape as "2x3", or "[] (scalar)"; out holds >= 200 bytes. */
static const char *st_shape_str(char *out, size_t cap, const int64_t *shape, int ndim)
{
    size_t o = 0;
    int k;
    if (ndim == 0) {
        snprintf(out, cap, "[] (scalar)");
        return out;
    }
    out[0] = '\0';
    for (k = 0; k < ndim && o < cap; k++) {
        int w = snprintf(out + o, cap - o, k ? "x%lld" : "%lld", (long long)shape[k]);
        if (w < 0)
            break;
        o += (size_t)w;
    }
    return out;
}

/* ------------------------------------------------------------------ */
/* reader                                                              */
/* ------------------------------------------------------------------ */

/* A word for the kind of a JSON value, for schema messages. */
static const char *st_kind(const json_t *v)
{
    static const char *const kinds[] = {"an object", "an array", "a string", "a number",
                                        "a number",  "a boolean", "a boolean", "null"};
    return kinds[json_typeof(v)]; /* indexed by json_type, JSON_OBJECT .. JSON_NULL */
}

/* st_show for a jansson string (which never holds a NUL: no JSON_ALLOW_NUL). */
static const char *st_show_json(char *out, const json_t *v)
{
    return st_show(out, (const unsigned char *)json_string_value(v), json_string_length(v));
}

/* Names a key that jansson refused as a repeat, in the schema's words:
 * a tensor name, "__metadata__", a metadata key or a field of a tensor.
 * jansson stops right after the repeated key and the text before it has
 * parsed, so telling strings from brackets is enough to find the key, its
 * depth and the top-level key it is under. Returns 1 when it wrote a
 * message, 0 for a key the schema has no words for (jansson's then). */
static int st_duplicate(const char *s, size_t at, char *err, size_t errlen)
{
    char kb[ST_SHOW_CAP], tb[ST_SHOW_CAP], root = 0;
    size_t i, key = 0, top = 0, top_end = 0;
    int depth = 0, done = 1;
    json_t *k = NULL, *t = NULL;
    for (i = 0; i < at; i++) {
        if (s[i] == '"') {
            for (key = i++; i < at && s[i] != '"'; i++)
                i += s[i] == '\\';
            if (depth == 1) { /* the last string at depth 1 before a '{' is that member's key */
                top = key;
                top_end = i + 1;
            }
        } else if (s[i] == '{' || s[i] == '[') {
            if (++depth == 1)
                root = s[i];
        } else if (s[i] == '}' || s[i] == ']') {
            depth--;
        }
    }
    if (root == '{' && (depth == 1 || depth == 2))
        k = json_loadb(s + key, at - key, JSON_DECODE_ANY, NULL);
    if (root == '{' && depth == 2 && top_end <= at)
        t = json_loadb(s + top, top_end - top, JSON_DECODE_ANY, NULL);
    if (!json_is_string(k) || (depth == 2 && !json_is_string(t)))
        done = 0;
    else if (depth == 1 && strcmp(json_string_value(k), "__metadata__") == 0)
        st_err(err, errlen, "\"__metadata__\" appears twice");
    else if (depth == 1)
        st_err(err, errlen, "duplicate tensor name '%s'", st_show_json(kb, k));
    else if (strcmp(json_string_value(t), "__metadata__") == 0)
        st_err(err, errlen, "\"__metadata__\" has duplicate key '%s'", st_show_json(kb, k));
    else
        st_err(err, errlen, "tensor '%s': duplicate key \"%s\"", st_show_json(tb, t), st_show_json(kb, k));
    json_decref(k);
    json_decref(t);
    return done;
}

/* Reports why jansson refused the header text s. Returns -1. */
static int st_json_error(const char *s, json_error_t *je, char *err, size_t errlen)
{
    char *p;
    if (json_error_code(je) == json_error_duplicate_key && je->position > 0
        && st_duplicate(s, (size_t)je->position, err, errlen))
        return -1;
    for (p = je->text; *p; p++)  /* jansson quotes the text it stopped at */
        if ((unsigned char)*p < 0x20u || *p == 0x7F)
            *p = '?';
    return st_err(err, errlen, "malformed header JSON at byte %d: %s", je->position, je->text);
}

/* Reads a JSON array of non-negative integers into out[0..max) for field
 * `what` of tensor `tname` (already rendered with st_show); *cnt gets the
 * number of elements. */
static int st_read_uints(json_t *a, const char *tname, const char *what, int64_t *out, int max, int *cnt,
                         char *err, size_t errlen)
{
    char num[64];
    size_t i, w;
    json_t *v;
    *cnt = 0;
    if (!json_is_array(a))
        return st_err(err, errlen, "tensor '%s': \"%s\" must be an array of integers, found %s", tname, what,
                      st_kind(a));
    json_array_foreach(a, i, v) {
        w = json_is_real(v) ? json_dumpb(v, num, sizeof num, JSON_ENCODE_ANY) : 0;
        if (w > 0 && w <= sizeof num)
            return st_err(err, errlen, "tensor '%s': \"%s\" value %.*s is not an integer", tname, what, (int)w,
                          num);
        if (!json_is_integer(v))
            return st_err(err, errlen, "tensor '%s': \"%s\" must contain only integers, found %s", tname, what,
                          st_kind(v));
        if (json_integer_value(v) < 0)
            return st_err(err, errlen, "tensor '%s': \"%s\" value %lld is negative", tname, what,
                          (long long)json_integer_value(v));
        if (*cnt >= max)
            return st_err(err, errlen, "tensor '%s': \"%s\" has more than %d entries", tname, what, max);
        out[(*cnt)++] = (int64_t)json_integer_value(v);
    }
    return 0;
}

/* Reads the object describing tensor e (whose name is already set) and
 * checks it against the data section of data_len bytes. Fields are taken
 * in header order, so the first bad one is the one reported. */
static int st_read_tensor(json_t *obj, lpnx_st_entry *e, size_t data_len, char *err, size_t errlen)
{
    static const char *const keys[3] = {"dtype", "shape", "data_offsets"};
    char nm[ST_SHOW_CAP], kb[ST_SHOW_CAP], shp[200];
    int seen[3] = {0, 0, 0}, k, cnt, dt;
    int64_t off[2] = {0, 0};
    uint64_t numel, nbytes, b, en;
    size_t esize;
    const char *key;
    json_t *v;

    st_show_cstr(nm, e->name);
    if (!json_is_object(obj))
        return st_err(err, errlen, "tensor '%s': expected an object, found %s", nm, st_kind(obj));
    json_object_foreach(obj, key, v) {
        for (k = 0; k < 3 && strcmp(key, keys[k]) != 0; k++)
            continue;
        if (k == 3)
            return st_err(err, errlen, "tensor '%s': unknown key '%s'", nm, st_show_cstr(kb, key));
        seen[k] = 1;
        if (k == 0 && !json_is_string(v))
            return st_err(err, errlen, "tensor '%s': \"dtype\" must be a string, found %s", nm, st_kind(v));
        if (k == 0 && (dt = st_dtype_lookup(json_string_value(v))) < 0)
            return st_err(err, errlen, "tensor '%s': unknown dtype '%s'", nm, st_show_json(kb, v));
        if (k == 0)
            e->dtype = (lpnx_st_dtype)dt;
        if (k == 1 && st_read_uints(v, nm, "shape", e->shape, LPNX_ST_MAXDIM, &e->ndim, err, errlen))
            return -1;
        if (k == 2 && st_read_uints(v, nm, "data_offsets", off, 2, &cnt, err, errlen))
            return -1;
        if (k == 2 && cnt != 2)
            return st_err(err, errlen, "tensor '%s': \"data_offsets\" must have 2 entries, has %d", nm, cnt);
    }
    for (k = 0; k < 3; k++)
        if (!seen[k])
            return st_err(err, errlen, "tensor '%s': missing \"%s\"", nm, keys[k]);

    b = (uint64_t)off[0];
    en = (uint64_t)off[1];
    if (b > en)
        return st_err(err, errlen, "tensor '%s': data offsets [%llu, %llu) are reversed (begin > end)", nm,
                      (unsigned long long)b, (unsigned long long)en);
    if (en > (uint64_t)data_len)
        return st_err(err, errlen, "tensor '%s': data offsets [%llu, %llu) past the end of the data (%llu bytes)",
                      nm, (unsigned long long)b, (unsigned long long)en, (unsigned long long)data_len);
    esize = lpnx_st_dtype_size(e->dtype);
    st_shape_str(shp, sizeof shp, e->shape, e->ndim);
    if (st_numel(e->shape, e->ndim, ST_COUNT_MAX / esize, &numel))
        return st_err(err, errlen, "tensor '%s': shape %s has too many elements", nm, shp);
    nbytes = numel * esize;
    if (nbytes != en - b)
        return st_err(err, errlen, "tensor '%s': shape %s needs %llu bytes, offsets give %llu", nm, shp,
                      (unsigned long long)nbytes, (unsigned long long)(en - b));
    e->begin = (size_t)b;
    e->end = (size_t)en;
    return 0;
}

/* Reads the "__metadata__" object (string -> string) into f->meta, in
 * header order. */
static int st_read_meta(json_t *m, lpnx_st_file *f, char *err, size_t errlen)
{
    char kb[ST_SHOW_CAP];
    const char *key;
    json_t *v;
    if (!json_is_object(m))
        return st_err(err, errlen, "\"__metadata__\" must be an object of strings, found %s", st_kind(m));
    if (json_object_size(m) > 0 && (f->meta = (lpnx_st_meta *)calloc(json_object_size(m), sizeof *f->meta)) == NULL)
        return st_err(err, errlen, "out of memory while parsing the header");
    json_object_foreach(m, key, v) {
        lpnx_st_meta *p = &f->meta[f->n_meta++];
        if (!json_is_string(v))
            return st_err(err, errlen, "\"__metadata__\" value for '%s' must be a string, found %s",
                          st_show_cstr(kb, key), st_kind(v));
        p->key = strdup(key);
        p->value = strdup(json_string_value(v));
        if (p->key == NULL || p->value == NULL)
            return st_err(err, errlen, "out of memory while parsing the header");
    }
    return 0;
}

/* Reads the top-level object into f: tensors and metadata in header order. */
static int st_read_header(json_t *root, lpnx_st_file *f, size_t data_len, char *err, size_t errlen)
{
    size_t n;
    const char *key;
    json_t *v;
    if (!json_is_object(root))
        return st_err(err, errlen, "header is not a JSON object (found %s)", st_kind(root));
    n = json_object_size(root) - (json_object_get(root, "__metadata__") != NULL);
    if (n > 0 && (f->entries = (lpnx_st_entry *)calloc(n, sizeof *f->entries)) == NULL)
        return st_err(err, errlen, "out of memory while parsing the header");
    json_object_foreach(root, key, v) {
        lpnx_st_entry *e;
        if (strcmp(key, "__metadata__") == 0) {
            if (st_read_meta(v, f, err, errlen))
                return -1;
            continue;
        }
        e = &f->entries[f->n_entries++];
        if ((e->name = strdup(key)) == NULL)
            return st_err(err, errlen, "out of memory while parsing the header");
        if (st_read_tensor(v, e, data_len, err, errlen))
            return -1;
    }
    return 0;
}

/* File-offset order; names break ties so the order is deterministic. */
static int st_cmp_entry_offset(const void *a, const void *b)
{
    const lpnx_st_entry *x = (const lpnx_st_entry *)a, *y = (const lpnx_st_entry *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

void lpnx_st_free(lpnx_st_file *f)
{
    size_t i;
    if (f == NULL)
        return;
    for (i = 0; f->entries != NULL && i < f->n_entries; i++)
        free(f->entries[i].name);
    for (i = 0; f->meta != NULL && i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->entries);
    free(f->meta);
    memset(f, 0, sizeof *f);
}

int lpnx_st_parse(lpnx_st_file *f, const unsigned char *bytes, size_t len, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root;
    uint64_t hlen;
    size_t data_len;
    int rc;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (f == NULL)
        return st_err(err, errlen, "no output struct given");
    memset(f, 0, sizeof *f);
    if (bytes == NULL && len > 0)
        return st_err(err, errlen, "no input bytes given");
    if (len < 8)
        return st_err(err, errlen, "file is %zu bytes, too short for the 8-byte header length", len);
    hlen = st_le64(bytes);
    if (hlen > LPNX_ST_MAX_HEADER)
        return st_err(err, errlen, "header length %llu exceeds the limit of %llu bytes", (unsigned long long)hlen,
                      (unsigned long long)LPNX_ST_MAX_HEADER);
    if (hlen > (uint64_t)(len - 8))
        return st_err(err, errlen, "header length %llu runs past the end of the file (%zu bytes)",
                      (unsigned long long)hlen, len);
    data_len = len - 8 - (size_t)hlen;

    /* The JSON tree lives only inside this call: released on every path. */
    root = json_loadb((const char *)bytes + 8, (size_t)hlen, ST_JSON_LOAD, &je);
    if (root == NULL)
        return st_json_error((const char *)bytes + 8, &je, err, errlen);
    rc = st_read_header(root, f, data_len, err, errlen);
    json_decref(root);
    if (rc != 0) {
        lpnx_st_free(f);
        return -1;
    }
    if (f->n_entries > 1)
        qsort(f->entries, f->n_entries, sizeof *f->entries, st_cmp_entry_offset);
    f->data = bytes + 8 + (size_t)hlen;
    f->data_len = data_len;
    return 0;
}

/* ------------------------------------------------------------------ */
/* conversion                                                          */
/* ------------------------------------------------------------------ */

/* IEEE half -> float, exact (subnormals normalised, inf/NaN kept). */
static float st_half(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t ex = (uint32_t)(h >> 10) & 0x1Fu, man = (uint32_t)h & 0x3FFu, bits;
    float out;
    if (ex == 0) {
        if (man == 0) {
            bits = sign;
        } else {
            ex = 113; /* 127 - 15 + 1, minus one per normalising shift */
            while ((man & 0x400u) == 0) {
                man <<= 1;
                ex--;
            }
            bits = sign | (ex << 23) | ((man & 0x3FFu) << 13);
        }
    } else if (ex == 31) {
        bits = sign | 0x7F800000u | (man << 13);
    } else {
        bits = sign | ((ex + 112u) << 23) | (man << 13);
    }
    memcpy(&out, &bits, sizeof out);
    return out;
}

static float st_bits_f32(uint32_t bits)
{
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

/* double -> float with round-to-nearest, avoiding the out-of-range
 * conversion C leaves undefined: finite values at or beyond the rounding
 * midpoint above FLT_MAX become +-inf, the rest between FLT_MAX and that
 * midpoint become +-FLT_MAX. */
static float st_d2f(double d)
{
    const double mid = 340282356779733661637539395458142568448.0; /* 2^128 - 2^103 */
    if (d != d)
        return (float)d;
    if (d > (double)FLT_MAX)
        return d >= mid ? (float)HUGE_VAL : FLT_MAX;
    if (d < -(double)FLT_MAX)
        return d <= -mid ? -(float)HUGE_VAL : -FLT_MAX;
    return (float)d;
}

void lpnx_st_to_f32(float *dst, const lpnx_st_file *f, const lpnx_st_entry *e)
{
    size_t sz;
    if (dst == NULL || f == NULL || e == NULL || f->data == NULL)
        return;
    sz = lpnx_st_dtype_size(e->dtype);
    if (sz == 0 || e->begin > e->end || e->end > f->data_len)
        return;
    lpnx_st_convert_f32(dst, f->data + e->begin, (e->end - e->begin) / sz, e->dtype);
}

void lpnx_st_convert_f32(float *dst, const unsigned char *p, size_t n, lpnx_st_dtype dtype)
{
    size_t i;
    if (dst == NULL || p == NULL)
        return;
    switch (dtype) {
    case LPNX_ST_F32:
        for (i = 0; i < n; i++)
            dst[i] = st_bits_f32(st_le32(p + 4 * i));
        break;
    case LPNX_ST_F16:
        for (i = 0; i < n; i++)
            dst[i] = st_half(st_le16(p + 2 * i));
        break;
    case LPNX_ST_BF16:
        for (i = 0; i < n; i++)
            dst[i] = st_bits_f32((uint32_t)st_le16(p + 2 * i) << 16);
        break;
    case LPNX_ST_F64:
        for (i = 0; i < n; i++) {
            uint64_t bits = st_le64(p + 8 * i);
            double d;
            memcpy(&d, &bits, sizeof d);
            dst[i] = st_d2f(d);
        }
        break;
    case LPNX_ST_I64:
        for (i = 0; i < n; i++) {
            uint64_t u = st_le64(p + 8 * i);
            int64_t v;
            memcpy(&v, &u, sizeof v); /* two's complement reinterpretation */
            dst[i] = (float)v;
        }
        break;
    case LPNX_ST_I32:
        for (i = 0; i < n; i++) {
            uint32_t u = st_le32(p + 4 * i);
            int32_t v;
            memcpy(&v, &u, sizeof v);
            dst[i] = (float)v;
        }
        break;
    case LPNX_ST_I16:
        for (i = 0; i < n; i++) {
            uint16_t u = st_le16(p + 2 * i);
            int16_t v;
            memcpy(&v, &u, sizeof v);
            dst[i] = (float)v;
        }
        break;
    case LPNX_ST_I8:
        for (i = 0; i < n; i++) {
            int8_t v;
            memcpy(&v, p + i, 1);
            dst[i] = (float)v;
        }
        break;
    case LPNX_ST_U8:
        for (i = 0; i < n; i++)
            dst[i] = (float)p[i];
        break;
    case LPNX_ST_BOOL:
        for (i = 0; i < n; i++)
            dst[i] = p[i] ? 1.0f : 0.0f;
        break;
    }
}

/* ------------------------------------------------------------------ */
/* writer                                                              */
/* ------------------------------------------------------------------ */

static int st_cmp_out_ptr(const void *a, const void *b)
{
    return strcmp((*(const lpnx_st_out *const *)a)->name, (*(const lpnx_st_out *const *)b)->name);
}

/* A JSON array of the n integers v[0..n); NULL when out of memory. */
static json_t *st_ints(const int64_t *v, int n)
{
    json_t *a = json_array();
    int k;
    for (k = 0; a != NULL && k < n; k++)
        if (json_array_append_new(a, json_integer((json_int_t)v[k]))) {
            json_decref(a);
            a = NULL;
        }
    return a;
}

/* Builds the header text into *text (malloc'ed, *len bytes): one object with
 * "__metadata__" first (keys in the caller's order), then the tensors of
 * `order` (sorted) with contiguous offsets, each as "dtype", "shape",
 * "data_offsets". It is dumped compact in that insertion order (not sorted)
 * and space-padded to a multiple of 8 bytes. Strings are already known to be
 * valid UTF-8, so the unchecked jansson setters are used. */
static int st_header(char **text, size_t *len, const char *path, const lpnx_st_out *const *order,
                     const uint64_t *nbytes, size_t n, const char *const *mk, const char *const *mv,
                     size_t n_meta, char *err, size_t errlen)
{
    char nb[ST_SHOW_CAP], *s = NULL, *p;
    json_t *root = json_object(), *meta = NULL;
    uint64_t off = 0;
    size_t i, used, padded;
    int bad = root == NULL;
    if (!bad && n_meta > 0)
        bad = json_object_set_new_nocheck(root, "__metadata__", meta = json_object());
    for (i = 0; !bad && i < n_meta; i++) {
        if (json_object_get(meta, mk[i]) != NULL) {
            json_decref(root);
            return st_err(err, errlen, "%s: duplicate metadata key '%s'", path, st_show_cstr(nb, mk[i]));
        }
        bad = json_object_set_new_nocheck(meta, mk[i], json_string_nocheck(mv[i]));
    }
    for (i = 0; !bad && i < n; i++) {
        json_t *t = json_object();
        int64_t offsets[2];
        offsets[0] = (int64_t)off;
        offsets[1] = (int64_t)(off + nbytes[i]); /* bounded by st_check_out's total */
        off += nbytes[i];
        /* each setter takes its value, or frees it when it fails */
        bad = json_object_set_new_nocheck(root, order[i]->name, t)
              || json_object_set_new_nocheck(t, "dtype", json_string_nocheck("F32"))
              || json_object_set_new_nocheck(t, "shape", st_ints(order[i]->shape, order[i]->ndim))
              || json_object_set_new_nocheck(t, "data_offsets", st_ints(offsets, 2));
    }
    if (!bad)
        s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (s == NULL)
        return st_err(err, errlen, "%s: out of memory building the header", path);
    used = strlen(s);
    padded = used + (8 - used % 8) % 8;
    if (padded > LPNX_ST_MAX_HEADER) {
        free(s);
        return st_err(err, errlen, "%s: header would be %zu bytes, over the limit of %llu", path, padded,
                      (unsigned long long)LPNX_ST_MAX_HEADER);
    }
    if ((p = (char *)realloc(s, padded + 1)) == NULL) {
        free(s);
        return st_err(err, errlen, "%s: out of memory building the header", path);
    }
    memset(p + used, ' ', padded - used);
    p[padded] = '\0';
    *text = p;
    *len = padded;
    return 0;
}

/* Validates the arguments of lpnx_st_write, fills nbytes[] (per tensor in
 * `order`, which it sorts) and checks tensor names for duplicates
 * (metadata keys are checked as the header is built). */
static int st_check_out(const char *path, const lpnx_st_out *tensors, size_t n, const lpnx_st_out **order,
                        uint64_t *nbytes, const char *const *mk, const char *const *mv, size_t n_meta,
                        char *err, size_t errlen)
{
    char nb[ST_SHOW_CAP];
    uint64_t total = 0;
    size_t i;
    int k;
    for (i = 0; i < n_meta; i++) {
        if (mk[i] == NULL || mv[i] == NULL)
            return st_err(err, errlen, "%s: metadata entry %zu has a NULL key or value", path, i);
        if (!st_utf8_valid(mk[i]) || !st_utf8_valid(mv[i]))
            return st_err(err, errlen, "%s: metadata entry '%s' is not valid UTF-8", path, st_show_cstr(nb, mk[i]));
    }
    for (i = 0; i < n; i++) {
        const lpnx_st_out *t = &tensors[i];
        uint64_t numel;
        if (t->name == NULL)
            return st_err(err, errlen, "%s: tensor %zu has no name", path, i);
        st_show_cstr(nb, t->name);
        if (!st_utf8_valid(t->name))
            return st_err(err, errlen, "%s: tensor name '%s' is not valid UTF-8", path, nb);
        if (strcmp(t->name, "__metadata__") == 0)
            return st_err(err, errlen, "%s: \"__metadata__\" cannot be a tensor name", path);
        if (t->ndim < 0 || t->ndim > LPNX_ST_MAXDIM)
            return st_err(err, errlen, "%s: tensor '%s': ndim %d is outside 0..%d", path, nb, t->ndim, LPNX_ST_MAXDIM);
        for (k = 0; k < t->ndim; k++)
            if (t->shape[k] < 0)
                return st_err(err, errlen, "%s: tensor '%s': size %lld of dim %d is negative", path, nb,
                              (long long)t->shape[k], k + 1);
        if (st_numel(t->shape, t->ndim, ST_COUNT_MAX / 4u, &numel))
            return st_err(err, errlen, "%s: tensor '%s': too many elements", path, nb);
        if (numel > 0 && t->data == NULL)
            return st_err(err, errlen, "%s: tensor '%s': data is NULL", path, nb);
        if (numel * 4u > (uint64_t)INT64_MAX - total)
            return st_err(err, errlen, "%s: total data size overflows", path);
        total += numel * 4u;
        order[i] = t;
    }
    if (n > 1) {
        qsort((void *)order, n, sizeof *order, st_cmp_out_ptr);
        for (i = 1; i < n; i++)
            if (strcmp(order[i - 1]->name, order[i]->name) == 0)
                return st_err(err, errlen, "%s: duplicate tensor name '%s'", path, st_show_cstr(nb, order[i]->name));
    }
    for (i = 0; i < n; i++) {
        uint64_t numel = 0;
        (void)st_numel(order[i]->shape, order[i]->ndim, UINT64_MAX, &numel);
        nbytes[i] = numel * 4u;
    }
    return 0;
}

/* Writes count floats as little-endian binary32 through a bounce buffer. */
static int st_write_f32(lpnx_atomic_file *out, const float *src, uint64_t count, char *err, size_t errlen)
{
    unsigned char chunk[16384] = {0};
    const size_t per = sizeof chunk / 4;
    while (count > 0) {
        size_t m = count < per ? (size_t)count : per, i;
        for (i = 0; i < m; i++) {
            uint32_t bits;
            memcpy(&bits, &src[i], sizeof bits);
            st_put_le32(chunk + 4 * i, bits);
        }
        if (lpnx_atomic_write(out, chunk, 4 * m, err, errlen))
            return -1;
        src += m;
        count -= m;
    }
    return 0;
}

int lpnx_st_write(const char *path, const lpnx_st_out *tensors, size_t n,
                  const char *const *meta_keys, const char *const *meta_values, size_t n_meta,
                  char *err, size_t errlen)
{
    const lpnx_st_out **order = NULL;
    uint64_t *nbytes = NULL;
    char *text = NULL;
    size_t text_len = 0, i;
    lpnx_atomic_file out = {NULL, NULL, NULL, 0, {0, 0}};
    int rc = -1;
    unsigned char lenb[8];

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (path == NULL || path[0] == '\0')
        return st_err(err, errlen, "(no path): no path given");
    if ((n > 0 && tensors == NULL) || (n_meta > 0 && (meta_keys == NULL || meta_values == NULL)))
        return st_err(err, errlen, "%s: NULL tensor or metadata array", path);
    if (n > SIZE_MAX / sizeof *order || n > SIZE_MAX / sizeof *nbytes)
        return st_err(err, errlen, "%s: too many tensors", path);
    order = (const lpnx_st_out **)malloc((n ? n : 1) * sizeof *order);
    nbytes = (uint64_t *)malloc((n ? n : 1) * sizeof *nbytes);
    if (order == NULL || nbytes == NULL) {
        st_err(err, errlen, "%s: out of memory", path);
        goto done;
    }
    if (st_check_out(path, tensors, n, order, nbytes, meta_keys, meta_values, n_meta, err, errlen))
        goto done;
    if (st_header(&text, &text_len, path, order, nbytes, n, meta_keys, meta_values, n_meta, err, errlen))
        goto done;

    for (i = 0; i < 8; i++)
        lenb[i] = (unsigned char)(((uint64_t)text_len >> (8 * i)) & 0xFFu);
    if (lpnx_atomic_begin(&out, path, err, errlen) || lpnx_atomic_write(&out, lenb, 8, err, errlen)
        || lpnx_atomic_write(&out, text, text_len, err, errlen))
        goto done;
    for (i = 0; i < n; i++)
        if (st_write_f32(&out, order[i]->data, nbytes[i] / 4u, err, errlen))
            goto done;
    rc = lpnx_atomic_commit(&out, err, errlen);

done:
    lpnx_atomic_abort(&out); /* the temporary file, when a step failed */
    free(text);
    free((void *)order);
    free(nbytes);
    return rc;
}
