/* Run-length masks; see rle.h for both string forms.
 *
 * decode reads the string twice: the first pass checks that every token is
 * a whole number and counts them (so an odd count is reported before any
 * run), the second walks the pairs, checks each run against the previous
 * one and the mask size, and paints it. encode walks the mask in pixel
 * order (column by column) and writes each maximal run of pixels > 0.5. */
#include "rle.h"

#include <stdio.h>
#include <string.h>

#define RLE_MAX_NUMBER 1000000000000000000LL /* 10^18: larger numbers are rejected */
#define RLE_MAX_PIXELS (1LL << 62)

static void rle_err(char *err, size_t errlen, const char *msg) {
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", msg);
}

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* A whitespace-free token of the string. */
typedef struct {
    const char *p;
    size_t n;
} token;

/* The next token from *pos on; 0 when there is none. */
static int next_token(const char *s, size_t len, size_t *pos, token *t) {
    size_t i = *pos;
    while (i < len && is_space(s[i]))
        i++;
    if (i >= len) {
        *pos = i;
        return 0;
    }
    t->p = s + i;
    while (i < len && !is_space(s[i]))
        i++;
    t->n = (size_t)(s + i - t->p);
    *pos = i;
    return 1;
}

enum { NUM_OK, NUM_BAD, NUM_LARGE };

/* Parses an optional '-' then decimal digits. */
static int parse_number(const token *t, int64_t *v) {
    size_t i = 0;
    int neg = 0;
    int64_t x = 0;
    if (t->n > 0 && t->p[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i >= t->n)
        return NUM_BAD;
    for (; i < t->n; i++) {
        char c = t->p[i];
        if (c < '0' || c > '9')
            return NUM_BAD;
        if (x > (RLE_MAX_NUMBER - (c - '0')) / 10)
            return NUM_LARGE;
        x = x * 10 + (c - '0');
    }
    *v = neg ? -x : x;
    return NUM_OK;
}

/* Quotes a token for a message: at most 24 bytes, control bytes as '?'. */
static void show_token(char *buf, size_t len, const token *t) {
    char tmp[32];
    size_t n = t->n > 24 ? 24 : t->n, i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)t->p[i];
        tmp[i] = (char)(c < 0x20u || c == 0x7Fu ? '?' : c);
    }
    tmp[n] = '\0';
    snprintf(buf, len, "'%s%s'", tmp, t->n > n ? "..." : "");
}

/* Sets pixels [start, start + length) of the column-major numbering. */
static void paint(float *mask, int64_t h, int64_t w, int64_t start, int64_t length) {
    int64_t x = start / h, y = start % h, k;
    for (k = 0; k < length; k++) {
        mask[y * w + x] = 1.0f;
        if (++y == h) {
            y = 0;
            x++;
        }
    }
}

int lpnx_rle_decode(float *mask, const char *s, size_t len, int64_t h, int64_t w, lpnx_rle_format fmt,
                    char *err, size_t errlen) {
    char msg[256], shown[40];
    const int standard = fmt == LPNX_RLE_STANDARD;
    size_t pos = 0, count = 0;
    int64_t n, v, prev_start = 0, prev_length = 0, end = 0, k;
    token t;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (mask == NULL || (s == NULL && len > 0) || h < 1 || w < 1 || h > RLE_MAX_PIXELS / w) {
        rle_err(err, errlen, "invalid arguments (no mask buffer, or a size below 1x1 or too large)");
        return -1;
    }
    n = h * w;
    memset(mask, 0, (size_t)n * sizeof *mask);

    /* pass 1: every token a whole number; count them */
    while (next_token(s, len, &pos, &t)) {
        int r = parse_number(&t, &v);
        count++;
        if (r != NUM_OK) {
            show_token(shown, sizeof shown, &t);
            snprintf(msg, sizeof msg, r == NUM_BAD ? "token %zu (%s) is not a whole number"
                                                   : "token %zu (%s) is too large",
                     count, shown);
            rle_err(err, errlen, msg);
            return -1;
        }
    }
    if (count == 0)
        return 0;
    if (count == 1) {
        pos = 0;
        next_token(s, len, &pos, &t);
        if (parse_number(&t, &v) == NUM_OK && v == -1)
            return 0;
    }
    if (count % 2 != 0) {
        snprintf(msg, sizeof msg, "odd count of numbers (%zu): expected pairs of %s and length", count,
                 standard ? "start" : "gap");
        rle_err(err, errlen, msg);
        return -1;
    }

    /* pass 2: the runs */
    pos = 0;
    for (k = 1; next_token(s, len, &pos, &t); k++) {
        int64_t first, length, start, shown_start;
        parse_number(&t, &first);
        next_token(s, len, &pos, &t);
        parse_number(&t, &length);
        if (standard) {
            if (first < 1) {
                snprintf(msg, sizeof msg, "run %lld has start %lld, expected at least 1 (standard starts count from 1)",
                         (long long)k, (long long)first);
                rle_err(err, errlen, msg);
                return -1;
            }
            start = first - 1;
            shown_start = first;
        } else {
            if (first < 0) {
                snprintf(msg, sizeof msg, "run %lld has a negative gap (%lld)", (long long)k, (long long)first);
                rle_err(err, errlen, msg);
                return -1;
            }
            start = end + first; /* end <= n < 2^62 and first <= 10^18: no overflow */
            shown_start = start;
        }
        if (length < 1) {
            snprintf(msg, sizeof msg, "run %lld has length %lld, expected at least 1", (long long)k, (long long)length);
            rle_err(err, errlen, msg);
            return -1;
        }
        if (standard && k > 1 && start < end) {
            snprintf(msg, sizeof msg,
                     "run %lld (start %lld, length %lld) overlaps or comes before run %lld (start %lld, length %lld)",
                     (long long)k, (long long)first, (long long)length, (long long)(k - 1),
                     (long long)(prev_start + 1), (long long)prev_length);
            rle_err(err, errlen, msg);
            return -1;
        }
        if (start > n || length > n - start) {
            snprintf(msg, sizeof msg, "run %lld (start %lld, length %lld) passes the last pixel %lld of a %lldx%lld mask",
                     (long long)k, (long long)shown_start, (long long)length, (long long)n, (long long)h,
                     (long long)w);
            rle_err(err, errlen, msg);
            return -1;
        }
        paint(mask, h, w, start, length);
        prev_start = start;
        prev_length = length;
        end = start + length;
    }
    return 0;
}

/* Walks the maximal runs of pixels > 0.5 in column-major order. */
typedef struct {
    const float *mask; /* (h, w) row-major */
    int64_t h, w;
    int64_t p;         /* next pixel index to look at */
    int64_t x, y;      /* its column and row */
} run_iter;

static int is_set(const run_iter *it) {
    return it->mask[it->y * it->w + it->x] > 0.5f;
}

static void advance(run_iter *it) {
    it->p++;
    if (++it->y == it->h) {
        it->y = 0;
        it->x++;
    }
}

static int next_run(run_iter *it, int64_t *start, int64_t *length) {
    const int64_t n = it->h * it->w;
    while (it->p < n && !is_set(it))
        advance(it);
    if (it->p >= n)
        return 0;
    *start = it->p;
    while (it->p < n && is_set(it))
        advance(it);
    *length = it->p - *start;
    return 1;
}

/* Appends the decimal form of v (>= 0) at out[*pos], within cap. */
static void put_number(char *out, size_t cap, size_t *pos, int64_t v) {
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%lld", (long long)v), i;
    for (i = 0; i < n; i++, (*pos)++)
        if (*pos < cap)
            out[*pos] = digits[i];
}

static void put_char(char *out, size_t cap, size_t *pos, char c) {
    if (*pos < cap)
        out[*pos] = c;
    (*pos)++;
}

size_t lpnx_rle_encode(char *out, size_t cap, const float *mask, int64_t h, int64_t w, lpnx_rle_format fmt) {
    run_iter it;
    size_t pos = 0;
    int64_t start, length, end = 0;
    if (out == NULL)
        cap = 0;
    memset(&it, 0, sizeof it);
    it.mask = mask;
    it.h = h;
    it.w = w;
    if (mask != NULL && h > 0 && w > 0) {
        while (next_run(&it, &start, &length)) {
            if (pos > 0)
                put_char(out, cap, &pos, ' ');
            put_number(out, cap, &pos, fmt == LPNX_RLE_STANDARD ? start + 1 : start - end);
            put_char(out, cap, &pos, ' ');
            put_number(out, cap, &pos, length);
            end = start + length;
        }
    }
    if (pos == 0) {
        put_char(out, cap, &pos, '-');
        put_char(out, cap, &pos, '1');
    }
    if (pos < cap)
        out[pos] = '\0';
    return pos;
}

size_t lpnx_rle_encoded_len(const float *mask, int64_t h, int64_t w, lpnx_rle_format fmt) {
    return lpnx_rle_encode(NULL, 0, mask, h, w, fmt);
}
