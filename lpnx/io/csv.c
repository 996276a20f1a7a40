/* CSV parser and the writer's quoting rule; see csv.h for the accepted
 * grammar and the contracts.
 *
 * The parser makes one pass over the bytes. Every value is copied unescaped
 * into one text buffer of len + 1 bytes, allocated up front: a value and its
 * terminating NUL never take more bytes than the value's raw form and the
 * comma or line break after it, and the last value of the input (which may
 * have no terminator) uses the extra byte. The field and row index arrays
 * grow by doubling with overflow checks. */
#include "csv.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* parser                                                              */
/* ------------------------------------------------------------------ */

typedef struct {
    const unsigned char *b; /* input */
    size_t len;
    size_t i;          /* next byte to read */
    size_t end;        /* where the trailing line breaks begin: no record starts there */
    size_t line;       /* 1-based line of byte i */
    size_t line_start; /* offset of the first byte of that line */
    size_t text_cap;   /* bytes allocated for out->text */
    size_t text_len;   /* bytes used */
    size_t field_cap;  /* entries allocated in field_start / field_len */
    size_t row_cap;    /* entries allocated in row_first */
    lpnx_csv *out;
    lpnx_csv_error *e;
} parser;

/* Records an error at byte offset `at` on line `line` starting at `start`. */
static int fail_at(parser *p, size_t line, size_t line_start, size_t at, const char *what) {
    if (p->e != NULL) {
        p->e->line = line;
        p->e->column = at - line_start + 1;
        snprintf(p->e->what, sizeof p->e->what, "%s", what);
    }
    return -1;
}

/* Shows byte c inside a message: 'x' when printable ASCII, else 0xNN. */
static void show_byte(char *buf, size_t len, unsigned char c) {
    if (c >= 0x20u && c < 0x7Fu)
        snprintf(buf, len, "'%c'", (char)c);
    else
        snprintf(buf, len, "byte 0x%02X", (unsigned)c);
}

/* Makes room for element `used` in an array of *cap elements of sz bytes.
 * Returns the array (moved when it grew), or NULL when memory runs out; the
 * old array is then still valid and owned by the caller. */
static void *grow(void *arr, size_t *cap, size_t used, size_t sz) {
    size_t ncap;
    void *n;
    if (used < *cap)
        return arr;
    if (*cap > SIZE_MAX / 2 / sz)
        return NULL;
    ncap = *cap ? *cap * 2 : 64;
    n = realloc(arr, ncap * sz);
    if (n == NULL)
        return NULL;
    *cap = ncap;
    return n;
}

static int out_of_memory(parser *p) {
    return fail_at(p, p->line, p->line_start, p->i, "out of memory");
}

/* Starts a new field at the current end of text. */
static int begin_field(parser *p) {
    lpnx_csv *o = p->out;
    if (o->n_fields == p->field_cap) {
        /* the two arrays share one capacity, recorded once both have grown */
        size_t cap = p->field_cap, cap2 = p->field_cap;
        size_t *starts = (size_t *)grow(o->field_start, &cap, o->n_fields, sizeof *o->field_start);
        if (starts == NULL)
            return out_of_memory(p);
        o->field_start = starts;
        size_t *lens = (size_t *)grow(o->field_len, &cap2, o->n_fields, sizeof *o->field_len);
        if (lens == NULL)
            return out_of_memory(p);
        o->field_len = lens;
        p->field_cap = cap;
    }
    o->field_start[o->n_fields] = p->text_len;
    o->field_len[o->n_fields] = 0;
    o->n_fields++;
    return 0;
}

static int put(parser *p, unsigned char c) {
    if (p->text_len >= p->text_cap) /* cannot happen (see the top); kept as a guard */
        return fail_at(p, p->line, p->line_start, p->i, "internal error: value buffer overrun");
    p->out->text[p->text_len++] = (char)c;
    p->out->field_len[p->out->n_fields - 1]++;
    return 0;
}

static int end_field(parser *p) {
    if (p->text_len >= p->text_cap)
        return fail_at(p, p->line, p->line_start, p->i, "internal error: value buffer overrun");
    p->out->text[p->text_len++] = '\0';
    return 0;
}

static int begin_row(parser *p) {
    lpnx_csv *o = p->out;
    /* row_first needs n_rows + 2 entries once this row is closed */
    size_t *rows = (size_t *)grow(o->row_first, &p->row_cap, o->n_rows + 1, sizeof *o->row_first);
    if (rows == NULL)
        return out_of_memory(p);
    o->row_first = rows;
    o->row_first[o->n_rows] = o->n_fields;
    o->n_rows++;
    return 0;
}

/* At a line break (LF, or CR LF) at p->i: consumes it and returns 1; a CR
 * not followed by LF is an error (-1); anything else returns 0. */
static int line_break(parser *p) {
    if (p->b[p->i] == '\n') {
        p->i++;
    } else if (p->b[p->i] == '\r') {
        if (p->i + 1 >= p->len || p->b[p->i + 1] != '\n')
            return fail_at(p, p->line, p->line_start, p->i, "carriage return not followed by a line feed");
        p->i += 2;
    } else {
        return 0;
    }
    p->line++;
    p->line_start = p->i;
    return 1;
}

/* Reads one quoted field; p->i is at the opening quote. */
static int quoted_field(parser *p) {
    size_t qline = p->line, qstart = p->line_start, qat = p->i;
    p->i++;
    for (;;) {
        unsigned char c;
        if (p->i >= p->len)
            return fail_at(p, qline, qstart, qat, "quoted field is never closed (its opening quote is here)");
        c = p->b[p->i];
        if (c == '"') {
            if (p->i + 1 < p->len && p->b[p->i + 1] == '"') {
                if (put(p, '"'))
                    return -1;
                p->i += 2;
                continue;
            }
            p->i++;
            return end_field(p);
        }
        if (put(p, c))
            return -1;
        p->i++;
        if (c == '\n') {
            p->line++;
            p->line_start = p->i;
        }
    }
}

/* Reads one unquoted field up to (not including) its comma, line break or
 * the end of input. */
static int plain_field(parser *p) {
    while (p->i < p->len) {
        unsigned char c = p->b[p->i];
        if (c == ',' || c == '\n' || c == '\r')
            break;
        if (c == '"')
            return fail_at(p, p->line, p->line_start, p->i,
                           "quote inside an unquoted field (quote the whole field and double the quote)");
        if (put(p, c))
            return -1;
        p->i++;
    }
    return end_field(p);
}

/* Where the trailing line breaks (LF or CR LF, any number) begin: records
 * end there. Found once, scanning back from the end, so that a file of many
 * empty lines is not rescanned after each one. */
static size_t content_end(const unsigned char *b, size_t start, size_t len) {
    size_t end = len;
    while (end > start && b[end - 1] == '\n') {
        end--;
        if (end > start && b[end - 1] == '\r')
            end--;
    }
    return end;
}

static int parse_all(parser *p) {
    while (p->i < p->end) {
        if (begin_row(p))
            return -1;
        for (;;) {
            if (begin_field(p))
                return -1;
            if (p->i < p->len && p->b[p->i] == '"') {
                if (quoted_field(p))
                    return -1;
            } else if (plain_field(p)) {
                return -1;
            }
            if (p->i >= p->len)
                return 0; /* last record without a line break */
            if (p->b[p->i] == ',') {
                p->i++;
                continue;
            }
            {
                int lb = line_break(p);
                if (lb < 0)
                    return -1;
                if (lb == 0) {
                    char what[160], shown[16];
                    show_byte(shown, sizeof shown, p->b[p->i]);
                    snprintf(what, sizeof what,
                             "unexpected %s after the closing quote of a field (a quote inside a quoted field must be doubled)",
                             shown);
                    return fail_at(p, p->line, p->line_start, p->i, what);
                }
            }
            break; /* end of record */
        }
    }
    return 0;
}

int lpnx_csv_parse(lpnx_csv *out, const unsigned char *bytes, size_t len, lpnx_csv_error *e) {
    parser p;
    if (out == NULL)
        return -1;
    memset(out, 0, sizeof *out);
    memset(&p, 0, sizeof p);
    if (e != NULL) {
        e->line = 1;
        e->column = 1;
        e->what[0] = '\0';
    }
    if (bytes == NULL && len > 0) {
        if (e != NULL)
            snprintf(e->what, sizeof e->what, "no input buffer");
        return -1;
    }
    p.b = bytes;
    p.len = len;
    p.line = 1;
    p.out = out;
    p.e = e;
    if (len >= 3 && bytes[0] == 0xEFu && bytes[1] == 0xBBu && bytes[2] == 0xBFu)
        p.i = p.line_start = 3;
    if (len == SIZE_MAX) {
        if (e != NULL)
            snprintf(e->what, sizeof e->what, "input too large");
        return -1;
    }
    p.text_cap = len + 1;
    out->text = (char *)malloc(p.text_cap);
    if (out->text == NULL) {
        if (e != NULL)
            snprintf(e->what, sizeof e->what, "out of memory (%zu bytes)", p.text_cap);
        return -1;
    }
    p.end = content_end(bytes, p.i, len);
    if (parse_all(&p) == 0) {
        /* the closing entry row_first[n_rows]: begin_row always leaves room */
        if (out->row_first == NULL)
            out->row_first = (size_t *)malloc(sizeof *out->row_first);
        if (out->row_first != NULL) {
            out->row_first[out->n_rows] = out->n_fields;
            return 0;
        }
        out_of_memory(&p);
    }
    lpnx_csv_free(out);
    return -1;
}

void lpnx_csv_free(lpnx_csv *c) {
    if (c == NULL)
        return;
    free(c->text);
    free(c->field_start);
    free(c->field_len);
    free(c->row_first);
    memset(c, 0, sizeof *c);
}

int lpnx_csv_needs_quotes(const char *s, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n')
            return 1;
    return 0;
}
