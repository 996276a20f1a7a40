/* safetensors reader and writer; see safetensors.h for the format and the
 * contracts.
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
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ST_MAX_DEPTH 64     /* JSON nesting limit (the schema itself needs 3) */
#define ST_SHOW_CAP 256     /* buffer size for a name quoted in a message */
#define ST_SHOW_BYTES 60    /* at most this many bytes of a name are quoted */

#if defined(__GNUC__)
#define ST_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ST_PRINTF(a, b)
#endif

/* ------------------------------------------------------------------ */
/* small helpers                                                       */
/* ------------------------------------------------------------------ */

/* printf into the caller's error buffer; tolerates err == NULL / errlen == 0. */
static void st_err(char *err, size_t errlen, const char *fmt, ...) ST_PRINTF(3, 4);
static void st_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
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

/* Copies s[0..n) into a fresh NUL-terminated string; NULL when out of memory. */
static char *st_strndup(const unsigned char *s, size_t n)
{
    char *p;
    if (n == SIZE_MAX)
        return NULL;
    p = (char *)malloc(n + 1);
    if (p == NULL)
        return NULL;
    if (n > 0)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* Grows *arr (elements of size elt) so it holds at least need elements,
 * doubling the capacity *cap. Returns 0 on success, -1 on overflow / OOM
 * (leaving *arr and *cap unchanged). */
static int st_grow(void **arr, size_t *cap, size_t need, size_t elt)
{
    size_t ncap;
    void *p;
    if (need <= *cap)
        return 0;
    ncap = *cap ? *cap : 8;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2)
            return -1;
        ncap *= 2;
    }
    if (ncap > SIZE_MAX / elt)
        return -1;
    p = realloc(*arr, ncap * elt);
    if (p == NULL)
        return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* Length of the well-formed UTF-8 sequence starting at s (n >= 1 bytes
 * available), or 0 if it is not well-formed (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF). */
static size_t st_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80u, hi = 0xBFu;
    size_t k, i;
    if (c < 0x80u)
        return 1;
    if (c >= 0xC2u && c <= 0xDFu) {
        k = 2;
    } else if (c >= 0xE0u && c <= 0xEFu) {
        k = 3;
        if (c == 0xE0u)
            lo = 0xA0u;
        else if (c == 0xEDu)
            hi = 0x9Fu;
    } else if (c >= 0xF0u && c <= 0xF4u) {
        k = 4;
        if (c == 0xF0u)
            lo = 0x90u;
        else if (c == 0xF4u)
            hi = 0x8Fu;
    } else {
        return 0;
    }
    if (n < k || s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < k; i++)
        if ((s[i] & 0xC0u) != 0x80u)
            return 0;
    return k;
}

/* 1 if the NUL-terminated string s is well-formed UTF-8. */
static int st_utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), i = 0;
    while (i < n) {
        size_t k = st_utf8_seq(p + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
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

/* Finds the dtype spelled s[0..n); -1 if unknown. */
static int st_dtype_lookup(const unsigned char *s, size_t n)
{
    size_t i;
    for (i = 0; i < ST_N_DTYPES; i++)
        if (strlen(st_dtypes[i].name) == n && memcmp(st_dtypes[i].name, s, n) == 0)
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
/* JSON lexer                                                          */
/* ------------------------------------------------------------------ */

/* Cursor over the header JSON plus a scratch buffer for decoded strings. */
typedef struct {
    const unsigned char *s; /* header text */
    size_t n;               /* its length */
    size_t i;               /* read position */
    char *err;              /* caller's error buffer */
    size_t errlen;
    unsigned char *buf;     /* last decoded string, NUL-terminated */
    size_t len;             /* its length without the NUL */
    size_t cap;             /* bytes allocated for buf */
    int has_nul;            /* the decoded string contains U+0000 */
} st_json;

/* Reports a syntax error at header byte `at`. Always returns -1. */
static int st_jerr(st_json *j, size_t at, const char *what)
{
    st_err(j->err, j->errlen, "malformed header JSON at byte %zu: %s", at, what);
    return -1;
}

/* Reports an unexpected byte (or end of header) where `wanted` was due. */
static int st_junexpected(st_json *j, const char *wanted)
{
    if (j->i >= j->n) {
        st_err(j->err, j->errlen, "malformed header JSON at byte %zu: expected %s but the header ends",
               j->i, wanted);
    } else {
        unsigned char c = j->s[j->i];
        if (c >= 0x20u && c < 0x7Fu)
            st_err(j->err, j->errlen, "malformed header JSON at byte %zu: expected %s, found '%c'",
                   j->i, wanted, (char)c);
        else
            st_err(j->err, j->errlen, "malformed header JSON at byte %zu: expected %s, found byte 0x%02X",
                   j->i, wanted, (unsigned)c);
    }
    return -1;
}

static void st_ws(st_json *j)
{
    while (j->i < j->n) {
        unsigned char c = j->s[j->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        j->i++;
    }
}

/* The next byte after whitespace, or -1 at the end. */
static int st_peek(st_json *j)
{
    st_ws(j);
    return j->i < j->n ? (int)j->s[j->i] : -1;
}

/* Skips whitespace and consumes the byte c, or reports what was found. */
static int st_expect(st_json *j, char c)
{
    char want[8];
    if (st_peek(j) == (int)(unsigned char)c) {
        j->i++;
        return 0;
    }
    want[0] = '\'';
    want[1] = c;
    want[2] = '\'';
    want[3] = '\0';
    return st_junexpected(j, want);
}

static int st_oom(st_json *j)
{
    st_err(j->err, j->errlen, "out of memory while parsing the header");
    return -1;
}

/* Appends one byte to the decoded-string buffer, keeping room for a NUL. */
static int st_jput(st_json *j, unsigned char b)
{
    if (j->len + 1 >= j->cap) {
        void *p = j->buf;
        if (st_grow(&p, &j->cap, j->len + 2, 1))
            return st_oom(j);
        j->buf = (unsigned char *)p;
    }
    j->buf[j->len++] = b;
    return 0;
}

/* Reads 4 hex digits at j->i into *v. */
static int st_hex4(st_json *j, unsigned long *v)
{
    size_t k;
    *v = 0;
    if (j->n - j->i < 4)
        return st_jerr(j, j->i, "truncated \\u escape");
    for (k = 0; k < 4; k++) {
        unsigned char c = j->s[j->i + k];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a') + 10u;
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A') + 10u;
        else
            return st_jerr(j, j->i + k, "bad hex digit in \\u escape");
        *v = (*v << 4) | d;
    }
    j->i += 4;
    return 0;
}

/* Appends code point cp (<= 0x10FFFF, not a surrogate) as UTF-8. */
static int st_jput_utf8(st_json *j, unsigned long cp)
{
    if (cp < 0x80ul)
        return st_jput(j, (unsigned char)cp);
    if (cp < 0x800ul)
        return st_jput(j, (unsigned char)(0xC0ul | (cp >> 6))) ||
               st_jput(j, (unsigned char)(0x80ul | (cp & 0x3Ful)));
    if (cp < 0x10000ul)
        return st_jput(j, (unsigned char)(0xE0ul | (cp >> 12))) ||
               st_jput(j, (unsigned char)(0x80ul | ((cp >> 6) & 0x3Ful))) ||
               st_jput(j, (unsigned char)(0x80ul | (cp & 0x3Ful)));
    return st_jput(j, (unsigned char)(0xF0ul | (cp >> 18))) ||
           st_jput(j, (unsigned char)(0x80ul | ((cp >> 12) & 0x3Ful))) ||
           st_jput(j, (unsigned char)(0x80ul | ((cp >> 6) & 0x3Ful))) ||
           st_jput(j, (unsigned char)(0x80ul | (cp & 0x3Ful)));
}

/* Parses the string starting at j->i (which must be '"'). With keep, the
 * decoded UTF-8 goes into j->buf/j->len (NUL-terminated) and j->has_nul
 * tells whether it contains U+0000; otherwise it is only validated.
 * Rejects raw control characters, bad escapes, unpaired surrogates and
 * ill-formed UTF-8. */
static int st_jstring(st_json *j, int keep)
{
    size_t start = j->i;
    j->len = 0;
    j->has_nul = 0;
    if (j->i >= j->n || j->s[j->i] != '"')
        return st_junexpected(j, "a string");
    j->i++;
    for (;;) {
        unsigned char c;
        if (j->i >= j->n)
            return st_jerr(j, start, "unterminated string");
        c = j->s[j->i];
        if (c == '"') {
            j->i++;
            break;
        }
        if (c < 0x20u)
            return st_jerr(j, j->i, "unescaped control character in string");
        if (c == '\\') {
            unsigned long cp;
            unsigned char out;
            size_t at = j->i;
            if (j->n - j->i < 2)
                return st_jerr(j, start, "unterminated string");
            c = j->s[j->i + 1];
            j->i += 2;
            switch (c) {
            case '"': out = '"'; break;
            case '\\': out = '\\'; break;
            case '/': out = '/'; break;
            case 'b': out = 0x08u; break;
            case 'f': out = 0x0Cu; break;
            case 'n': out = 0x0Au; break;
            case 'r': out = 0x0Du; break;
            case 't': out = 0x09u; break;
            case 'u':
                if (st_hex4(j, &cp))
                    return -1;
                if (cp >= 0xD800ul && cp <= 0xDBFFul) {
                    unsigned long lo;
                    if (j->n - j->i < 2 || j->s[j->i] != '\\' || j->s[j->i + 1] != 'u')
                        return st_jerr(j, at, "unpaired surrogate in \\u escape");
                    j->i += 2;
                    if (st_hex4(j, &lo))
                        return -1;
                    if (lo < 0xDC00ul || lo > 0xDFFFul)
                        return st_jerr(j, at, "unpaired surrogate in \\u escape");
                    cp = 0x10000ul + ((cp - 0xD800ul) << 10) + (lo - 0xDC00ul);
                } else if (cp >= 0xDC00ul && cp <= 0xDFFFul) {
                    return st_jerr(j, at, "unpaired surrogate in \\u escape");
                }
                if (cp == 0)
                    j->has_nul = 1;
                if (keep && st_jput_utf8(j, cp))
                    return -1;
                continue;
            default:
                return st_jerr(j, at, "invalid escape in string");
            }
            if (keep && st_jput(j, out))
                return -1;
            continue;
        }
        if (c < 0x80u) {
            if (keep && st_jput(j, c))
                return -1;
            j->i++;
        } else {
            size_t k = st_utf8_seq(j->s + j->i, j->n - j->i), m;
            if (k == 0)
                return st_jerr(j, j->i, "invalid UTF-8 in string");
            for (m = 0; m < k; m++)
                if (keep && st_jput(j, j->s[j->i + m]))
                    return -1;
            j->i += k;
        }
    }
    if (keep) {
        if (st_jput(j, 0))
            return -1;
        j->len--;
    }
    return 0;
}

/* Scans a JSON number at j->i. *is_int: it has no fraction or exponent;
 * then *in_range says whether it fits int64_t and *v holds it. */
static int st_jnumber(st_json *j, int64_t *v, int *is_int, int *in_range)
{
    size_t start = j->i;
    int neg = 0, over = 0;
    uint64_t mag = 0;
    *v = 0;
    *is_int = 1;
    *in_range = 1;
    if (j->i < j->n && j->s[j->i] == '-') {
        neg = 1;
        j->i++;
    }
    if (j->i >= j->n || j->s[j->i] < '0' || j->s[j->i] > '9')
        return st_jerr(j, start, "invalid number");
    if (j->s[j->i] == '0') {
        j->i++;
        if (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9')
            return st_jerr(j, start, "number with a leading zero");
    } else {
        while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9') {
            unsigned d = (unsigned)(j->s[j->i] - '0');
            if (mag > (UINT64_MAX - d) / 10u)
                over = 1;
            else
                mag = mag * 10u + d;
            j->i++;
        }
    }
    if (j->i < j->n && j->s[j->i] == '.') {
        *is_int = 0;
        j->i++;
        if (j->i >= j->n || j->s[j->i] < '0' || j->s[j->i] > '9')
            return st_jerr(j, start, "invalid number (no digits after '.')");
        while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9')
            j->i++;
    }
    if (j->i < j->n && (j->s[j->i] == 'e' || j->s[j->i] == 'E')) {
        *is_int = 0;
        j->i++;
        if (j->i < j->n && (j->s[j->i] == '+' || j->s[j->i] == '-'))
            j->i++;
        if (j->i >= j->n || j->s[j->i] < '0' || j->s[j->i] > '9')
            return st_jerr(j, start, "invalid number (no digits in exponent)");
        while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9')
            j->i++;
    }
    if (!*is_int)
        return 0;
    if (over || mag > (neg ? (uint64_t)INT64_MAX + 1u : (uint64_t)INT64_MAX)) {
        *in_range = 0;
        return 0;
    }
    if (neg)
        *v = mag == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)mag;
    else
        *v = (int64_t)mag;
    return 0;
}

/* Matches the literal word at j->i. */
static int st_jliteral(st_json *j, const char *word)
{
    size_t k = strlen(word);
    if (j->n - j->i < k || memcmp(j->s + j->i, word, k) != 0)
        return st_junexpected(j, "a value");
    j->i += k;
    return 0;
}

/* Syntax check of one JSON value of any kind (first pass), with a
 * nesting limit of ST_MAX_DEPTH. Nothing is stored. */
static int st_jskip(st_json *j, int depth)
{
    int c = st_peek(j);
    int64_t v;
    int is_int, in_range;
    if (c == '{' || c == '[') {
        int is_obj = c == '{';
        char close = is_obj ? '}' : ']';
        if (depth >= ST_MAX_DEPTH)
            return st_jerr(j, j->i, "nesting deeper than 64 levels");
        j->i++;
        if (st_peek(j) == (int)(unsigned char)close) {
            j->i++;
            return 0;
        }
        for (;;) {
            if (is_obj) {
                st_ws(j);
                if (st_jstring(j, 0) || st_expect(j, ':'))
                    return -1;
            }
            if (st_jskip(j, depth + 1))
                return -1;
            c = st_peek(j);
            if (c == ',') {
                j->i++;
                continue;
            }
            if (c == (int)(unsigned char)close) {
                j->i++;
                return 0;
            }
            return st_junexpected(j, is_obj ? "',' or '}'" : "',' or ']'");
        }
    }
    if (c == '"')
        return st_jstring(j, 0);
    if (c == '-' || (c >= '0' && c <= '9'))
        return st_jnumber(j, &v, &is_int, &in_range);
    if (c == 't')
        return st_jliteral(j, "true");
    if (c == 'f')
        return st_jliteral(j, "false");
    if (c == 'n')
        return st_jliteral(j, "null");
    return st_junexpected(j, "a value");
}

/* ------------------------------------------------------------------ */
/* header schema (second pass; syntax is already known to be valid,    */
/* but every step still checks bounds and reports mismatches)          */
/* ------------------------------------------------------------------ */

/* A word for the kind of value starting with byte c, for schema messages. */
static const char *st_kind(int c)
{
    if (c == '{') return "an object";
    if (c == '[') return "an array";
    if (c == '"') return "a string";
    if (c == '-' || (c >= '0' && c <= '9')) return "a number";
    if (c == 't' || c == 'f') return "a boolean";
    if (c == 'n') return "null";
    return "nothing";
}

/* Reads a JSON array of non-negative integers into out[0..max) for field
 * `what` of tensor `tname` (already rendered with st_show); *cnt gets the
 * number of elements. */
static int st_read_uints(st_json *j, const char *tname, const char *what,
                         int64_t *out, int max, int *cnt)
{
    int c = st_peek(j);
    *cnt = 0;
    if (c != '[') {
        st_err(j->err, j->errlen, "tensor '%s': \"%s\" must be an array of integers, found %s",
               tname, what, st_kind(c));
        return -1;
    }
    j->i++;
    if (st_peek(j) == ']') {
        j->i++;
        return 0;
    }
    for (;;) {
        size_t at;
        int64_t v;
        int is_int, in_range;
        c = st_peek(j);
        if (c != '-' && !(c >= '0' && c <= '9')) {
            st_err(j->err, j->errlen, "tensor '%s': \"%s\" must contain only integers, found %s",
                   tname, what, st_kind(c));
            return -1;
        }
        at = j->i;
        if (st_jnumber(j, &v, &is_int, &in_range))
            return -1;
        if (!is_int || !in_range) {
            size_t w = j->i - at;
            st_err(j->err, j->errlen, "tensor '%s': \"%s\" value %.*s%s is %s", tname, what,
                   (int)(w > 40 ? 40 : w), (const char *)j->s + at, w > 40 ? "..." : "",
                   !is_int ? "not an integer" : "out of range");
            return -1;
        }
        if (v < 0) {
            st_err(j->err, j->errlen, "tensor '%s': \"%s\" value %lld is negative", tname, what,
                   (long long)v);
            return -1;
        }
        if (*cnt >= max) {
            st_err(j->err, j->errlen, "tensor '%s': \"%s\" has more than %d entries", tname, what, max);
            return -1;
        }
        out[(*cnt)++] = v;
        c = st_peek(j);
        if (c == ',') {
            j->i++;
            continue;
        }
        if (c == ']') {
            j->i++;
            return 0;
        }
        return st_junexpected(j, "',' or ']'");
    }
}

/* Reads the object describing tensor e (whose name is already set) and
 * checks it against the data section of data_len bytes. */
static int st_read_tensor(st_json *j, lpnx_st_entry *e, size_t data_len)
{
    static const char *const keys[3] = {"dtype", "shape", "data_offsets"};
    char nm[ST_SHOW_CAP], kb[ST_SHOW_CAP], shp[200];
    int seen[3] = {0, 0, 0};
    int c, k, cnt;
    int64_t off[2] = {0, 0};
    uint64_t numel, nbytes, b, en;
    size_t esize;

    st_show_cstr(nm, e->name);
    c = st_peek(j);
    if (c != '{') {
        st_err(j->err, j->errlen, "tensor '%s': expected an object, found %s", nm, st_kind(c));
        return -1;
    }
    j->i++;
    if (st_peek(j) == '}') {
        j->i++;
    } else {
        for (;;) {
            int which = -1;
            st_ws(j);
            if (st_jstring(j, 1))
                return -1;
            if (!j->has_nul)
                for (k = 0; k < 3; k++)
                    if (strlen(keys[k]) == j->len && memcmp(keys[k], j->buf, j->len) == 0)
                        which = k;
            if (which < 0) {
                st_err(j->err, j->errlen, "tensor '%s': unknown key '%s'", nm, st_show(kb, j->buf, j->len));
                return -1;
            }
            if (seen[which]) {
                st_err(j->err, j->errlen, "tensor '%s': duplicate key \"%s\"", nm, keys[which]);
                return -1;
            }
            seen[which] = 1;
            if (st_expect(j, ':'))
                return -1;
            if (which == 0) {
                int dt;
                c = st_peek(j);
                if (c != '"') {
                    st_err(j->err, j->errlen, "tensor '%s': \"dtype\" must be a string, found %s", nm,
                           st_kind(c));
                    return -1;
                }
                if (st_jstring(j, 1))
                    return -1;
                dt = j->has_nul ? -1 : st_dtype_lookup(j->buf, j->len);
                if (dt < 0) {
                    st_err(j->err, j->errlen, "tensor '%s': unknown dtype '%s'", nm,
                           st_show(kb, j->buf, j->len));
                    return -1;
                }
                e->dtype = (lpnx_st_dtype)dt;
            } else if (which == 1) {
                if (st_read_uints(j, nm, "shape", e->shape, LPNX_ST_MAXDIM, &cnt))
                    return -1;
                e->ndim = cnt;
            } else {
                if (st_read_uints(j, nm, "data_offsets", off, 2, &cnt))
                    return -1;
                if (cnt != 2) {
                    st_err(j->err, j->errlen, "tensor '%s': \"data_offsets\" must have 2 entries, has %d",
                           nm, cnt);
                    return -1;
                }
            }
            c = st_peek(j);
            if (c == ',') {
                j->i++;
                continue;
            }
            if (c == '}') {
                j->i++;
                break;
            }
            return st_junexpected(j, "',' or '}'");
        }
    }
    for (k = 0; k < 3; k++) {
        if (!seen[k]) {
            st_err(j->err, j->errlen, "tensor '%s': missing \"%s\"", nm, keys[k]);
            return -1;
        }
    }

    b = (uint64_t)off[0];
    en = (uint64_t)off[1];
    if (b > en) {
        st_err(j->err, j->errlen, "tensor '%s': data offsets [%llu, %llu) are reversed (begin > end)", nm,
               (unsigned long long)b, (unsigned long long)en);
        return -1;
    }
    if (en > (uint64_t)data_len) {
        st_err(j->err, j->errlen, "tensor '%s': data offsets [%llu, %llu) past the end of the data (%llu bytes)",
               nm, (unsigned long long)b, (unsigned long long)en, (unsigned long long)data_len);
        return -1;
    }
    esize = lpnx_st_dtype_size(e->dtype);
    st_shape_str(shp, sizeof shp, e->shape, e->ndim);
    {
        uint64_t limit = (uint64_t)INT64_MAX < (uint64_t)SIZE_MAX ? (uint64_t)INT64_MAX : (uint64_t)SIZE_MAX;
        if (st_numel(e->shape, e->ndim, limit / esize, &numel)) {
            st_err(j->err, j->errlen, "tensor '%s': shape %s has too many elements", nm, shp);
            return -1;
        }
    }
    nbytes = numel * esize;
    if (nbytes != en - b) {
        st_err(j->err, j->errlen, "tensor '%s': shape %s needs %llu bytes, offsets give %llu", nm, shp,
               (unsigned long long)nbytes, (unsigned long long)(en - b));
        return -1;
    }
    e->begin = (size_t)b;
    e->end = (size_t)en;
    return 0;
}

/* Reads the "__metadata__" object (string -> string) into f->meta. */
static int st_read_meta(st_json *j, lpnx_st_file *f, size_t *mcap)
{
    char kb[ST_SHOW_CAP];
    int c = st_peek(j);
    if (c != '{') {
        st_err(j->err, j->errlen, "\"__metadata__\" must be an object of strings, found %s", st_kind(c));
        return -1;
    }
    j->i++;
    if (st_peek(j) == '}') {
        j->i++;
        return 0;
    }
    for (;;) {
        char *key, *val;
        st_ws(j);
        if (st_jstring(j, 1))
            return -1;
        if (j->has_nul) {
            st_err(j->err, j->errlen, "\"__metadata__\" key '%s' contains a NUL character",
                   st_show(kb, j->buf, j->len));
            return -1;
        }
        key = st_strndup(j->buf, j->len);
        if (key == NULL)
            return st_oom(j);
        if (st_expect(j, ':')) {
            free(key);
            return -1;
        }
        c = st_peek(j);
        if (c != '"') {
            st_err(j->err, j->errlen, "\"__metadata__\" value for '%s' must be a string, found %s",
                   st_show_cstr(kb, key), st_kind(c));
            free(key);
            return -1;
        }
        if (st_jstring(j, 1)) {
            free(key);
            return -1;
        }
        if (j->has_nul) {
            st_err(j->err, j->errlen, "\"__metadata__\" value for '%s' contains a NUL character",
                   st_show_cstr(kb, key));
            free(key);
            return -1;
        }
        val = st_strndup(j->buf, j->len);
        if (val == NULL) {
            free(key);
            return st_oom(j);
        }
        {
            void *p = f->meta;
            if (st_grow(&p, mcap, f->n_meta + 1, sizeof *f->meta)) {
                free(key);
                free(val);
                return st_oom(j);
            }
            f->meta = (lpnx_st_meta *)p;
        }
        f->meta[f->n_meta].key = key;
        f->meta[f->n_meta].value = val;
        f->n_meta++;
        c = st_peek(j);
        if (c == ',') {
            j->i++;
            continue;
        }
        if (c == '}') {
            j->i++;
            return 0;
        }
        return st_junexpected(j, "',' or '}'");
    }
}

/* Reads the top-level object into f. */
static int st_read_header(st_json *j, lpnx_st_file *f, size_t data_len)
{
    char nb[ST_SHOW_CAP];
    size_t ecap = 0, mcap = 0;
    int seen_meta = 0, c = st_peek(j);
    if (c != '{') {
        st_err(j->err, j->errlen, "header is not a JSON object (found %s)", st_kind(c));
        return -1;
    }
    j->i++;
    if (st_peek(j) == '}') {
        j->i++;
        return 0;
    }
    for (;;) {
        char *name;
        st_ws(j);
        if (st_jstring(j, 1))
            return -1;
        if (j->has_nul) {
            st_err(j->err, j->errlen, "tensor name '%s' contains a NUL character", st_show(nb, j->buf, j->len));
            return -1;
        }
        if (st_expect(j, ':'))
            return -1;
        if (j->len == 12 && memcmp(j->buf, "__metadata__", 12) == 0) {
            if (seen_meta) {
                st_err(j->err, j->errlen, "\"__metadata__\" appears twice");
                return -1;
            }
            seen_meta = 1;
            if (st_read_meta(j, f, &mcap))
                return -1;
        } else {
            lpnx_st_entry *e;
            void *p = f->entries;
            name = st_strndup(j->buf, j->len);
            if (name == NULL)
                return st_oom(j);
            if (st_grow(&p, &ecap, f->n_entries + 1, sizeof *f->entries)) {
                free(name);
                return st_oom(j);
            }
            f->entries = (lpnx_st_entry *)p;
            e = &f->entries[f->n_entries++];
            memset(e, 0, sizeof *e);
            e->name = name;
            if (st_read_tensor(j, e, data_len))
                return -1;
        }
        c = st_peek(j);
        if (c == ',') {
            j->i++;
            continue;
        }
        if (c == '}') {
            j->i++;
            return 0;
        }
        return st_junexpected(j, "',' or '}'");
    }
}

static int st_cmp_entry_name(const void *a, const void *b)
{
    return strcmp(((const lpnx_st_entry *)a)->name, ((const lpnx_st_entry *)b)->name);
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

static int st_cmp_cstr_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void lpnx_st_free(lpnx_st_file *f)
{
    size_t i;
    if (f == NULL)
        return;
    if (f->entries != NULL)
        for (i = 0; i < f->n_entries; i++)
            free(f->entries[i].name);
    if (f->meta != NULL)
        for (i = 0; i < f->n_meta; i++) {
            free(f->meta[i].key);
            free(f->meta[i].value);
        }
    free(f->entries);
    free(f->meta);
    memset(f, 0, sizeof *f);
}

/* Checks names for duplicates (tensor names, then metadata keys). */
static int st_check_duplicates(lpnx_st_file *f, char *err, size_t errlen)
{
    char nb[ST_SHOW_CAP];
    size_t i;
    if (f->n_entries > 1) {
        qsort(f->entries, f->n_entries, sizeof *f->entries, st_cmp_entry_name);
        for (i = 1; i < f->n_entries; i++)
            if (strcmp(f->entries[i - 1].name, f->entries[i].name) == 0) {
                st_err(err, errlen, "duplicate tensor name '%s'", st_show_cstr(nb, f->entries[i].name));
                return -1;
            }
    }
    if (f->n_meta > 1) {
        const char **keys = (const char **)malloc(f->n_meta * sizeof *keys);
        if (keys == NULL) {
            st_err(err, errlen, "out of memory while parsing the header");
            return -1;
        }
        for (i = 0; i < f->n_meta; i++)
            keys[i] = f->meta[i].key;
        qsort((void *)keys, f->n_meta, sizeof *keys, st_cmp_cstr_ptr);
        for (i = 1; i < f->n_meta; i++)
            if (strcmp(keys[i - 1], keys[i]) == 0) {
                st_err(err, errlen, "\"__metadata__\" has duplicate key '%s'", st_show_cstr(nb, keys[i]));
                free((void *)keys);
                return -1;
            }
        free((void *)keys);
    }
    return 0;
}

int lpnx_st_parse(lpnx_st_file *f, const unsigned char *bytes, size_t len, char *err, size_t errlen)
{
    st_json j;
    uint64_t hlen;
    int rc;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (f == NULL) {
        st_err(err, errlen, "no output struct given");
        return -1;
    }
    memset(f, 0, sizeof *f);
    if (bytes == NULL && len > 0) {
        st_err(err, errlen, "no input bytes given");
        return -1;
    }
    if (len < 8) {
        st_err(err, errlen, "file is %zu bytes, too short for the 8-byte header length", len);
        return -1;
    }
    hlen = st_le64(bytes);
    if (hlen > LPNX_ST_MAX_HEADER) {
        st_err(err, errlen, "header length %llu exceeds the limit of %llu bytes", (unsigned long long)hlen,
               (unsigned long long)LPNX_ST_MAX_HEADER);
        return -1;
    }
    if (hlen > (uint64_t)(len - 8)) {
        st_err(err, errlen, "header length %llu runs past the end of the file (%zu bytes)",
               (unsigned long long)hlen, len);
        return -1;
    }

    memset(&j, 0, sizeof j);
    j.s = bytes + 8;
    j.n = (size_t)hlen;
    j.err = err;
    j.errlen = errlen;

    /* pass 1: syntax of the whole header, so syntax errors win over schema errors */
    rc = st_jskip(&j, 0);
    if (rc == 0) {
        st_ws(&j);
        if (j.i != j.n)
            rc = st_jerr(&j, j.i, "unexpected data after the top-level value");
    }
    /* pass 2: the schema */
    if (rc == 0) {
        j.i = 0;
        rc = st_read_header(&j, f, len - 8 - j.n);
    }
    free(j.buf);
    if (rc == 0)
        rc = st_check_duplicates(f, err, errlen);
    if (rc != 0) {
        lpnx_st_free(f);
        return -1;
    }
    if (f->n_entries > 1)
        qsort(f->entries, f->n_entries, sizeof *f->entries, st_cmp_entry_offset);
    f->data = bytes + 8 + j.n;
    f->data_len = len - 8 - j.n;
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
    const unsigned char *p;
    size_t sz, n, i;
    if (dst == NULL || f == NULL || e == NULL || f->data == NULL)
        return;
    sz = lpnx_st_dtype_size(e->dtype);
    if (sz == 0 || e->begin > e->end || e->end > f->data_len)
        return;
    n = (e->end - e->begin) / sz;
    p = f->data + e->begin;
    switch (e->dtype) {
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

/* Growable text buffer; `bad` latches an allocation failure. */
typedef struct {
    char *p;
    size_t len, cap;
    int bad;
} st_sbuf;

static void st_sb_put(st_sbuf *b, const char *s, size_t n)
{
    void *p;
    if (b->bad)
        return;
    if (n > SIZE_MAX - b->len - 1) {
        b->bad = 1;
        return;
    }
    p = b->p;
    if (st_grow(&p, &b->cap, b->len + n + 1, 1)) {
        b->bad = 1;
        return;
    }
    b->p = (char *)p;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void st_sb_str(st_sbuf *b, const char *s)
{
    st_sb_put(b, s, strlen(s));
}

static void st_sb_u64(st_sbuf *b, uint64_t v)
{
    char tmp[32];
    int w = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    if (w > 0)
        st_sb_put(b, tmp, (size_t)w);
}

/* Appends s as a JSON string literal: quotes, backslash and control
 * characters escaped; other bytes (valid UTF-8) copied as they are. */
static void st_sb_jstr(st_sbuf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    st_sb_put(b, "\"", 1);
    for (; *p; p++) {
        switch (*p) {
        case '"': st_sb_put(b, "\\\"", 2); break;
        case '\\': st_sb_put(b, "\\\\", 2); break;
        case '\n': st_sb_put(b, "\\n", 2); break;
        case '\r': st_sb_put(b, "\\r", 2); break;
        case '\t': st_sb_put(b, "\\t", 2); break;
        case '\b': st_sb_put(b, "\\b", 2); break;
        case '\f': st_sb_put(b, "\\f", 2); break;
        default:
            if (*p < 0x20u) {
                char esc[6];
                esc[0] = '\\';
                esc[1] = 'u';
                esc[2] = '0';
                esc[3] = '0';
                esc[4] = hex[*p >> 4];
                esc[5] = hex[*p & 0xFu];
                st_sb_put(b, esc, 6);
            } else {
                st_sb_put(b, (const char *)p, 1);
            }
        }
    }
    st_sb_put(b, "\"", 1);
}

static int st_cmp_out_ptr(const void *a, const void *b)
{
    return strcmp((*(const lpnx_st_out *const *)a)->name, (*(const lpnx_st_out *const *)b)->name);
}

/* Builds the padded header JSON for the tensors in `order` (sorted) and
 * the metadata. Returns 0, or -1 with a message (prefixed by path). */
static int st_build_header(st_sbuf *h, const char *path, const lpnx_st_out *const *order,
                           const uint64_t *nbytes, size_t n, const char *const *mk,
                           const char *const *mv, size_t n_meta, char *err, size_t errlen)
{
    uint64_t off = 0;
    size_t i;
    int k;
    st_sb_put(h, "{", 1);
    if (n_meta > 0) {
        st_sb_str(h, "\"__metadata__\":{");
        for (i = 0; i < n_meta; i++) {
            if (i)
                st_sb_put(h, ",", 1);
            st_sb_jstr(h, mk[i]);
            st_sb_put(h, ":", 1);
            st_sb_jstr(h, mv[i]);
        }
        st_sb_put(h, "}", 1);
        if (n > 0)
            st_sb_put(h, ",", 1);
    }
    for (i = 0; i < n; i++) {
        const lpnx_st_out *t = order[i];
        if (i)
            st_sb_put(h, ",", 1);
        st_sb_jstr(h, t->name);
        st_sb_str(h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (k = 0; k < t->ndim; k++) {
            if (k)
                st_sb_put(h, ",", 1);
            st_sb_u64(h, (uint64_t)t->shape[k]);
        }
        st_sb_str(h, "],\"data_offsets\":[");
        st_sb_u64(h, off);
        st_sb_put(h, ",", 1);
        st_sb_u64(h, off + nbytes[i]);
        st_sb_str(h, "]}");
        off += nbytes[i]; /* bounded by the caller's total check */
    }
    st_sb_put(h, "}", 1);
    while (!h->bad && h->len % 8 != 0)
        st_sb_put(h, " ", 1);
    if (h->bad) {
        st_err(err, errlen, "%s: out of memory building the header", path);
        return -1;
    }
    if (h->len > LPNX_ST_MAX_HEADER) {
        st_err(err, errlen, "%s: header would be %zu bytes, over the limit of %llu", path, h->len,
               (unsigned long long)LPNX_ST_MAX_HEADER);
        return -1;
    }
    return 0;
}

/* Validates the arguments of lpnx_st_write, fills nbytes[] (per tensor in
 * `order`, which it sorts) and checks for duplicates. */
static int st_check_out(const char *path, const lpnx_st_out *tensors, size_t n, const lpnx_st_out **order,
                        uint64_t *nbytes, const char *const *mk, const char *const *mv, size_t n_meta,
                        char *err, size_t errlen)
{
    char nb[ST_SHOW_CAP];
    uint64_t total = 0;
    size_t i;
    int k;
    for (i = 0; i < n_meta; i++) {
        if (mk[i] == NULL || mv[i] == NULL) {
            st_err(err, errlen, "%s: metadata entry %zu has a NULL key or value", path, i);
            return -1;
        }
        if (!st_utf8_valid(mk[i]) || !st_utf8_valid(mv[i])) {
            st_err(err, errlen, "%s: metadata entry '%s' is not valid UTF-8", path, st_show_cstr(nb, mk[i]));
            return -1;
        }
    }
    if (n_meta > 1) {
        const char **keys = (const char **)malloc(n_meta * sizeof *keys);
        if (keys == NULL) {
            st_err(err, errlen, "%s: out of memory", path);
            return -1;
        }
        memcpy((void *)keys, (const void *)mk, n_meta * sizeof *keys);
        qsort((void *)keys, n_meta, sizeof *keys, st_cmp_cstr_ptr);
        for (i = 1; i < n_meta; i++)
            if (strcmp(keys[i - 1], keys[i]) == 0) {
                st_err(err, errlen, "%s: duplicate metadata key '%s'", path, st_show_cstr(nb, keys[i]));
                free((void *)keys);
                return -1;
            }
        free((void *)keys);
    }
    for (i = 0; i < n; i++) {
        const lpnx_st_out *t = &tensors[i];
        uint64_t numel;
        if (t->name == NULL) {
            st_err(err, errlen, "%s: tensor %zu has no name", path, i);
            return -1;
        }
        st_show_cstr(nb, t->name);
        if (!st_utf8_valid(t->name)) {
            st_err(err, errlen, "%s: tensor name '%s' is not valid UTF-8", path, nb);
            return -1;
        }
        if (strcmp(t->name, "__metadata__") == 0) {
            st_err(err, errlen, "%s: \"__metadata__\" cannot be a tensor name", path);
            return -1;
        }
        if (t->ndim < 0 || t->ndim > LPNX_ST_MAXDIM) {
            st_err(err, errlen, "%s: tensor '%s': ndim %d is outside 0..%d", path, nb, t->ndim, LPNX_ST_MAXDIM);
            return -1;
        }
        for (k = 0; k < t->ndim; k++)
            if (t->shape[k] < 0) {
                st_err(err, errlen, "%s: tensor '%s': size %lld of dim %d is negative", path, nb,
                       (long long)t->shape[k], k + 1);
                return -1;
            }
        if (st_numel(t->shape, t->ndim, ((uint64_t)INT64_MAX < (uint64_t)SIZE_MAX ? (uint64_t)INT64_MAX
                                                                                    : (uint64_t)SIZE_MAX) / 4u,
                     &numel)) {
            st_err(err, errlen, "%s: tensor '%s': too many elements", path, nb);
            return -1;
        }
        if (numel > 0 && t->data == NULL) {
            st_err(err, errlen, "%s: tensor '%s': data is NULL", path, nb);
            return -1;
        }
        if (numel * 4u > (uint64_t)INT64_MAX - total) {
            st_err(err, errlen, "%s: total data size overflows", path);
            return -1;
        }
        total += numel * 4u;
        order[i] = t;
    }
    if (n > 1) {
        qsort((void *)order, n, sizeof *order, st_cmp_out_ptr);
        for (i = 1; i < n; i++)
            if (strcmp(order[i - 1]->name, order[i]->name) == 0) {
                st_err(err, errlen, "%s: duplicate tensor name '%s'", path, st_show_cstr(nb, order[i]->name));
                return -1;
            }
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
    st_sbuf h = {NULL, 0, 0, 0};
    lpnx_atomic_file out = {NULL, NULL, NULL, 0, {0, 0}};
    int rc = -1;
    size_t i;
    unsigned char lenb[8];

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (path == NULL || path[0] == '\0') {
        st_err(err, errlen, "(no path): no path given");
        return -1;
    }
    if ((n > 0 && tensors == NULL) || (n_meta > 0 && (meta_keys == NULL || meta_values == NULL))) {
        st_err(err, errlen, "%s: NULL tensor or metadata array", path);
        return -1;
    }
    if (n > SIZE_MAX / sizeof *order || n > SIZE_MAX / sizeof *nbytes) {
        st_err(err, errlen, "%s: too many tensors", path);
        return -1;
    }
    order = (const lpnx_st_out **)malloc((n ? n : 1) * sizeof *order);
    nbytes = (uint64_t *)malloc((n ? n : 1) * sizeof *nbytes);
    if (order == NULL || nbytes == NULL) {
        st_err(err, errlen, "%s: out of memory", path);
        goto done;
    }
    if (st_check_out(path, tensors, n, order, nbytes, meta_keys, meta_values, n_meta, err, errlen))
        goto done;
    if (st_build_header(&h, path, order, nbytes, n, meta_keys, meta_values, n_meta, err, errlen))
        goto done;

    for (i = 0; i < 8; i++)
        lenb[i] = (unsigned char)(((uint64_t)h.len >> (8 * i)) & 0xFFu);
    if (lpnx_atomic_begin(&out, path, err, errlen) || lpnx_atomic_write(&out, lenb, 8, err, errlen)
        || lpnx_atomic_write(&out, h.p, h.len, err, errlen))
        goto done;
    for (i = 0; i < n; i++)
        if (st_write_f32(&out, order[i]->data, nbytes[i] / 4u, err, errlen))
            goto done;
    rc = lpnx_atomic_commit(&out, err, errlen);

done:
    lpnx_atomic_abort(&out); /* the temporary file, when a step failed */
    free(h.p);
    free((void *)order);
    free(nbytes);
    return rc;
}
