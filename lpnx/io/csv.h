/* CSV (RFC 4180): a strict parser over a byte buffer and the quoting rule
 * of the writer (files are read and written whole with file.h).
 *
 * The parser accepts exactly RFC 4180 with two allowances: a line may end
 * in LF as well as CRLF, and a UTF-8 byte order mark at the very start is
 * skipped. Fields are either unquoted (no '"', no CR, no LF inside) or
 * enclosed in double quotes, where '""' stands for one '"' and commas, CR
 * and LF are data. A line break at the end of the last record, and any
 * empty lines after it, do not start a new record; an empty line anywhere
 * else is a record with one empty field. Records may have different field
 * counts: checking them is the caller's business.
 *
 * Plain C99, no Lua. Nothing here aborts or keeps global state; every error
 * is returned as non-zero with the reason in the caller's struct/buffer. */
#ifndef LPNX_IO_CSV_H
#define LPNX_IO_CSV_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A parsed file: rows of fields, every field's value copied out unescaped. */
typedef struct {
    char *text;          /* the values one after another, each followed by a NUL */
    size_t *field_start; /* (n_fields) offset of each value in text */
    size_t *field_len;   /* (n_fields) byte length of each value (NUL bytes of the input stay data) */
    size_t *row_first;   /* (n_rows + 1) index of each row's first field; row_first[n_rows] == n_fields */
    size_t n_rows;
    size_t n_fields;
} lpnx_csv;

/* Where and why parsing stopped. line and column are 1-based; the column
 * counts bytes from the start of the line (after the byte order mark on
 * line 1). Without quoted line breaks, line N is row N of the file. */
typedef struct {
    size_t line;
    size_t column;
    char what[200];
} lpnx_csv_error;

/* Parses len bytes. On success returns 0 and out owns its arrays (release
 * with lpnx_csv_free); an empty input, or one holding only a byte order
 * mark and line breaks, gives zero rows. On failure returns non-zero,
 * leaves out zeroed and fills *e (e may be NULL). bytes may be NULL when
 * len == 0. */
int lpnx_csv_parse(lpnx_csv *out, const unsigned char *bytes, size_t len, lpnx_csv_error *e);

/* Frees what lpnx_csv_parse allocated and zeroes c; safe twice and on NULL. */
void lpnx_csv_free(lpnx_csv *c);

/* 1 when a value of n bytes must be written in quotes: it holds a comma, a
 * double quote, CR or LF. (The writer also quotes a row's only field when it
 * is empty, so that the row is not read back as a blank line.) */
int lpnx_csv_needs_quotes(const char *s, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* LPNX_IO_CSV_H */
