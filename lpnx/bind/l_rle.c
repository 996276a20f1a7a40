/* lpnx.rle and lpnx.csv: run-length masks and CSV files.
 *
 *   lpnx.rle.decode(str, h, w [, {format = "relative"|"standard"}]) -> mask (H,W)
 *   lpnx.rle.encode(mask [, {format = ...}]) -> str     mask (H,W) or (1,H,W)
 *   lpnx.csv.read(path [, {header = true}]) -> header|nil, rows
 *   lpnx.csv.parse(text [, {header = true}]) -> header|nil, rows
 *   lpnx.csv.write(path, header|nil, rows)
 *
 * A parsed CSV (and the file it came from) lives in Lua-owned holders
 * while its tables are built, so a Lua error halfway frees it through the
 * collector. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "../io/csv.h"
#include "../io/file.h"
#include "../io/rle.h"
#include "bind.h"

#define CSV_HOLDER_MT "lpnx.CsvHolder"
#define SHAPE_LEN 160

/* ---- rle ------------------------------------------------------------- */

static lpnx_rle_format opt_format(lua_State *L, int arg) {
    lpnx_rle_format fmt = LPNX_RLE_RELATIVE;
    if (lua_isnoneornil(L, arg)) return fmt;
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_getfield(L, arg, "format");
    if (!lua_isnil(L, -1)) {
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        if (s != NULL && strcmp(s, "relative") == 0)
            fmt = LPNX_RLE_RELATIVE;
        else if (s != NULL && strcmp(s, "standard") == 0)
            fmt = LPNX_RLE_STANDARD;
        else
            luaL_argerror(L, arg, lua_pushfstring(L, "format must be \"relative\" or \"standard\", got %s",
                                                  s ? lua_pushfstring(L, "\"%s\"", s) : luaL_typename(L, -1)));
    }
    lua_pop(L, 1);
    return fmt;
}

/* An integer argument >= 1 (and below 2^31); what names it. */
static int64_t check_side(lua_State *L, int arg, const char *what) {
    int ok;
    lua_Integer v = lua_tointegerx(L, arg, &ok);
    if (!ok || v < 1 || v > INT_MAX) {
        const char *got = lua_type(L, arg) == LUA_TNUMBER ? lua_tostring(L, arg) : luaL_typename(L, arg);
        luaL_argerror(L, arg, lua_pushfstring(L, "expected a %s of at least 1 (at most %d), got %s", what, INT_MAX, got));
    }
    return (int64_t)v;
}

static int l_rle_decode(lua_State *L) {
    char err[320];
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    int64_t size[2];
    size[0] = check_side(L, 2, "height");
    size[1] = check_side(L, 3, "width");
    lpnx_rle_format fmt = opt_format(L, 4);
    lpnx_Tensor *t = lpnx_pushnew(L, 2, size, 0);
    if (lpnx_rle_decode(lpnx_tensor_data(t), s, len, size[0], size[1], fmt, err, sizeof err) != 0)
        return luaL_error(L, "lpnx.rle.decode: %s", err);
    return 1;
}

static int l_rle_encode(lua_State *L) {
    char s1[SHAPE_LEN];
    lpnx_Tensor *t = lpnx_checktensor(L, 1);
    if (!t->storage) return luaL_argerror(L, 1, "tensor was closed");
    int64_t h, w;
    if (t->ndim == 2) {
        h = t->size[0];
        w = t->size[1];
    } else if (t->ndim == 3 && t->size[0] == 1) {
        h = t->size[1];
        w = t->size[2];
    } else {
        return luaL_argerror(
            L, 1, lua_pushfstring(L, "expected a mask (H,W) or (1,H,W), got %s", lpnx_shape_of(s1, SHAPE_LEN, t)));
    }
    if (h < 1 || w < 1)
        return luaL_argerror(
            L, 1,
            lua_pushfstring(L, "expected a mask of at least 1x1 pixels, got %s", lpnx_shape_of(s1, SHAPE_LEN, t)));
    lpnx_rle_format fmt = opt_format(L, 2);
    lua_settop(L, 2);
    t = lpnx_checkcontiguous(L, 1); /* a copy pushed at 3 when t is a strided view */
    const float *m = lpnx_tensor_data(t);
    size_t len = lpnx_rle_encoded_len(m, h, w, fmt);
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, len + 1);
    lpnx_rle_encode(out, len + 1, m, h, w, fmt);
    luaL_pushresultsize(&b, len);
    return 1;
}

/* ---- csv ------------------------------------------------------------- */

typedef struct {
    lpnx_csv csv; /* the parse, owned */
} csv_holder;

static int csv_holder_gc(lua_State *L) {
    csv_holder *h = luaL_checkudata(L, 1, CSV_HOLDER_MT);
    lpnx_csv_free(&h->csv);
    return 0;
}

static csv_holder *push_holder(lua_State *L) {
    csv_holder *h = lua_newuserdatauv(L, sizeof *h, 0);
    memset(h, 0, sizeof *h);
    luaL_setmetatable(L, CSV_HOLDER_MT);
    return h;
}

static int opt_header(lua_State *L, int arg) {
    int header = 1;
    if (lua_isnoneornil(L, arg)) return header;
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_getfield(L, arg, "header");
    if (!lua_isnil(L, -1)) {
        if (!lua_isboolean(L, -1))
            luaL_argerror(L, arg, lua_pushfstring(L, "header must be a boolean, got %s", luaL_typename(L, -1)));
        header = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return header;
}

/* Pushes row r of c as an array of strings. */
static void push_row(lua_State *L, const lpnx_csv *c, size_t r) {
    size_t first = c->row_first[r], n = c->row_first[r + 1] - first;
    lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
    for (size_t j = 0; j < n; j++) {
        lua_pushlstring(L, c->text + c->field_start[first + j], c->field_len[first + j]);
        lua_rawseti(L, -2, (lua_Integer)j + 1);
    }
}

/* Parses bytes into h->csv and pushes header (or nil) and rows; where
 * starts error messages ("lpnx.csv.read: path:" or "lpnx.csv.parse:"). */
static int parse_and_push(lua_State *L, csv_holder *h, const unsigned char *bytes, size_t len, int header,
                          const char *where) {
    lpnx_csv_error e;
    if (lpnx_csv_parse(&h->csv, bytes, len, &e) != 0)
        return luaL_error(L, "%s%I:%I: %s", where, (lua_Integer)e.line, (lua_Integer)e.column, e.what);
    const lpnx_csv *c = &h->csv;
    if (header && c->n_rows == 0)
        return luaL_error(L, "%s1:1: no header row (the file is empty)", where);
    size_t first = 0;
    if (header) {
        push_row(L, c, 0);
        first = 1;
    } else {
        lua_pushnil(L);
    }
    size_t n = c->n_rows - first;
    lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
    for (size_t r = first; r < c->n_rows; r++) {
        push_row(L, c, r);
        lua_rawseti(L, -2, (lua_Integer)(r - first) + 1);
    }
    lpnx_csv_free(&h->csv); /* done early; the collector would do it too */
    return 2;
}

static int l_csv_read(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int header = opt_header(L, 2);
    lua_settop(L, 2);
    lpnx_file_bytes *fb = lpnx_pushfile(L, path, "lpnx.csv.read");
    csv_holder *h = push_holder(L);
    const char *where = lua_pushfstring(L, "lpnx.csv.read: %s:", path);
    int n = parse_and_push(L, h, fb->bytes, fb->len, header, where);
    lpnx_freefile(fb);
    return n;
}

static int l_csv_parse(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    int header = opt_header(L, 2);
    lua_settop(L, 2);
    csv_holder *h = push_holder(L);
    return parse_and_push(L, h, (const unsigned char *)s, len, header, "lpnx.csv.parse: ");
}

/* Appends n bytes at out[*pos] when out is not NULL; always advances *pos. */
static void emit(char *out, size_t *pos, const char *s, size_t n) {
    if (out != NULL) memcpy(out + *pos, s, n);
    *pos += n;
}

/* One value: quoted, with '"' doubled, when it needs quotes or is the only
 * field of its row and empty. */
static void emit_field(char *out, size_t *pos, const char *s, size_t n, int alone) {
    if (!lpnx_csv_needs_quotes(s, n) && !(alone && n == 0)) {
        emit(out, pos, s, n);
        return;
    }
    emit(out, pos, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"') emit(out, pos, "\"", 1);
        emit(out, pos, s + i, 1);
    }
    emit(out, pos, "\"", 1);
}

/* Writes (out != NULL) or measures (out == NULL) one row: the table at
 * stack index idx, of which row number `row` (0 for the header) is checked
 * to have `want` fields when want > 0, as many as `like` ("the header").
 * arg is the argument it came in. */
static void emit_row(lua_State *L, char *out, size_t *pos, int idx, int arg, size_t row, size_t want,
                     const char *like) {
    size_t n = lua_rawlen(L, idx);
    const char *what = row == 0 ? "the header" : lua_pushfstring(L, "row %I", (lua_Integer)row);
    if (out == NULL) {
        if (n == 0)
            luaL_argerror(L, arg, lua_pushfstring(L, "%s has no fields (a CSV row has at least one)", what));
        if (want > 0 && n != want)
            luaL_argerror(L, arg, lua_pushfstring(L, "%s has %I fields, expected %I like %s", what, (lua_Integer)n,
                                                  (lua_Integer)want, like));
    }
    for (size_t j = 1; j <= n; j++) {
        int type = lua_rawgeti(L, idx, (lua_Integer)j);
        if (type != LUA_TSTRING && type != LUA_TNUMBER)
            luaL_argerror(L, arg, lua_pushfstring(L, "%s, field %I is a %s, expected a string or number", what,
                                                  (lua_Integer)j, luaL_typename(L, -1)));
        size_t len;
        const char *s = lua_tolstring(L, -1, &len); /* converts the stack copy of a number */
        if (j > 1) emit(out, pos, ",", 1);
        emit_field(out, pos, s, len, n == 1);
        lua_pop(L, 1);
    }
    emit(out, pos, "\n", 1);
    if (row > 0) lua_pop(L, 1); /* the name pushed for messages */
}

/* Measures (out == NULL) or writes the whole file. */
static void emit_all(lua_State *L, char *out, size_t *pos) {
    size_t want = 0, nrows = lua_rawlen(L, 3);
    if (!lua_isnil(L, 2)) {
        emit_row(L, out, pos, 2, 2, 0, 0, NULL);
        want = lua_rawlen(L, 2);
    }
    for (size_t r = 1; r <= nrows; r++) {
        if (lua_rawgeti(L, 3, (lua_Integer)r) != LUA_TTABLE)
            luaL_argerror(L, 3, lua_pushfstring(L, "row %I is a %s, expected a table of fields", (lua_Integer)r,
                                                luaL_typename(L, -1)));
        emit_row(L, out, pos, lua_gettop(L), 3, r, want, lua_isnil(L, 2) ? "the first row" : "the header");
        if (want == 0) want = lua_rawlen(L, -1);
        lua_pop(L, 1);
    }
}

static int l_csv_write(lua_State *L) {
    char err[512];
    const char *path = luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    if (lua_isnone(L, 2) || lua_isnil(L, 2)) {
        lua_pushnil(L);
        lua_replace(L, 2);
    }
    size_t len = 0;
    emit_all(L, NULL, &len); /* checks every value and measures */
    char *out = lua_newuserdatauv(L, len ? len : 1, 0); /* Lua-owned, at index 4 */
    len = 0;
    emit_all(L, out, &len);
    if (lpnx_file_write_atomic(path, out, len, err, sizeof err) != 0)
        return luaL_error(L, "lpnx.csv.write: %s", err);
    return 0;
}

static const luaL_Reg rle_functions[] = {{"decode", l_rle_decode}, {"encode", l_rle_encode}, {NULL, NULL}};
static const luaL_Reg csv_functions[] = {
    {"read", l_csv_read}, {"parse", l_csv_parse}, {"write", l_csv_write}, {NULL, NULL}};

void lpnx_open_rle(lua_State *L) {
    lpnx_gcmeta(L, CSV_HOLDER_MT, csv_holder_gc);
    luaL_newlib(L, rle_functions);
    lua_setfield(L, -2, "rle");
    luaL_newlib(L, csv_functions);
    lua_setfield(L, -2, "csv");
}
