/* lpnx._onnx_write(path, model): writes an ONNX file from a graph that
 * lua/lpnx/models/onnx.lua describes as Lua data; this binding checks the
 * description and hands it to lpnx/io/onnx.c, which encodes it.
 *
 *   model = {ir_version = 8, opset = 17, producer_name = "lpnx", producer_version = "...",
 *            graph_name = "...", doc = "...",
 *            nodes = {{op = "Conv", name = "...", inputs = {"x", "w", ""}, outputs = {"y"},
 *                      attrs = {{"strides", "ints", {1, 1}}, {"epsilon", "float", 1e-5}, ...}}, ...},
 *            initializers = {{name = "w", tensor = T}, {name = "scales", ints = {...}}, ...},
 *            inputs = {{name = "image", dims = {"batch", 3, 256, 256}}, ...},    -- float32
 *            outputs = {...},
 *            metadata = {{"key", "value"}, ...}}
 *
 * Attribute kinds: "int", "ints", "float", "floats", "string". Every array
 * lives in a Lua userdata and every string in the description, so an error
 * raised halfway leaks nothing. */
#include <string.h>

#include "../io/onnx.h"
#include "bind.h"

#define WHERE "lpnx._onnx_write"

/* A zeroed array of n items of size each, owned by a userdata left on the stack. */
static void *scratch(lua_State *L, size_t n, size_t size) {
    if (n > ((size_t)-1 >> 1) / (size ? size : 1)) luaL_error(L, WHERE ": description too large");
    void *p = lua_newuserdatauv(L, n * size + 1, 0);
    memset(p, 0, n * size + 1);
    return p;
}

/* The field key of the table at t, which must be a table; pushed. */
static size_t table_field(lua_State *L, int t, const char *key, const char *what) {
    if (lua_getfield(L, t, key) != LUA_TTABLE) luaL_error(L, WHERE ": %s.%s must be a table", what, key);
    return (size_t)lua_rawlen(L, -1);
}

/* The string at index i of the table at t, which must stay referenced. */
static const char *string_at(lua_State *L, int t, lua_Integer i, const char *what) {
    if (lua_rawgeti(L, t, i) != LUA_TSTRING) luaL_error(L, WHERE ": %s[%d] must be a string", what, (int)i);
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1);
    return s;
}

static const char *opt_string(lua_State *L, int t, const char *key) {
    int ty = lua_getfield(L, t, key);
    const char *s = NULL;
    if (ty == LUA_TSTRING) s = lua_tostring(L, -1);
    else if (ty != LUA_TNIL) luaL_error(L, WHERE ": %s must be a string", key);
    lua_pop(L, 1);
    return s;
}

static const char *req_string(lua_State *L, int t, const char *key, const char *what) {
    int ty = lua_getfield(L, t, key);
    if (ty != LUA_TSTRING) luaL_error(L, WHERE ": %s.%s must be a string", what, key);
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1);
    return s;
}

static int64_t int_value(lua_State *L, int idx, const char *what) {
    int ok;
    lua_Integer v = lua_tointegerx(L, idx, &ok);
    if (!ok) luaL_error(L, WHERE ": %s must be an integer", what);
    return (int64_t)v;
}

/* An array of strings from the table at t; the userdata is pushed. */
static const char **strings(lua_State *L, int t, size_t n, const char *what) {
    const char **out = scratch(L, n, sizeof *out);
    for (size_t i = 0; i < n; i++) out[i] = string_at(L, t, (lua_Integer)i + 1, what);
    return out;
}

static int64_t *ints(lua_State *L, int t, size_t n, const char *what) {
    int64_t *out = scratch(L, n, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, t, (lua_Integer)i + 1);
        out[i] = int_value(L, -1, what);
        lua_pop(L, 1);
    }
    return out;
}

static void read_attr(lua_State *L, int t, lpnx_onnx_attr *a, const char *node) {
    a->name = string_at(L, t, 1, "attribute");
    const char *kind = string_at(L, t, 2, "attribute");
    lua_rawgeti(L, t, 3);
    int v = lua_gettop(L);
    if (strcmp(kind, "int") == 0) {
        a->type = LPNX_ONNX_INT;
        a->i = int_value(L, v, a->name);
    } else if (strcmp(kind, "float") == 0) {
        a->type = LPNX_ONNX_FLOAT;
        if (!lua_isnumber(L, v)) luaL_error(L, WHERE ": node %s: attribute %s must be a number", node, a->name);
        a->f = (float)lua_tonumber(L, v);
    } else if (strcmp(kind, "string") == 0) {
        a->type = LPNX_ONNX_STRING;
        if (lua_type(L, v) != LUA_TSTRING) luaL_error(L, WHERE ": node %s: attribute %s must be a string", node, a->name);
        a->s = lua_tostring(L, v); /* the description keeps it */
    } else if (strcmp(kind, "ints") == 0 || strcmp(kind, "floats") == 0) {
        if (!lua_istable(L, v)) luaL_error(L, WHERE ": node %s: attribute %s must be a list", node, a->name);
        a->n = (size_t)lua_rawlen(L, v);
        if (kind[0] == 'i') {
            a->type = LPNX_ONNX_INTS;
            a->ints = ints(L, v, a->n, a->name);
        } else {
            a->type = LPNX_ONNX_FLOATS;
            float *f = scratch(L, a->n, sizeof *f);
            for (size_t i = 0; i < a->n; i++) {
                lua_rawgeti(L, v, (lua_Integer)i + 1);
                if (!lua_isnumber(L, -1)) luaL_error(L, WHERE ": node %s: attribute %s must hold numbers", node, a->name);
                f[i] = (float)lua_tonumber(L, -1);
                lua_pop(L, 1);
            }
            a->floats = f;
        }
        return; /* the value and its array stay on the stack, for the caller to anchor */
    } else {
        luaL_error(L, WHERE ": node %s: attribute %s has unknown kind '%s'", node, a->name, kind);
    }
}

static void read_value(lua_State *L, int t, lpnx_onnx_value *v, const char *what) {
    v->name = req_string(L, t, "name", what);
    v->elem = LPNX_ONNX_FLOAT32;
    v->ndim = table_field(L, t, "dims", what);
    int d = lua_gettop(L);
    int64_t *dims = scratch(L, v->ndim, sizeof *dims);
    const char **names = scratch(L, v->ndim, sizeof *names);
    for (size_t k = 0; k < v->ndim; k++) {
        int ty = lua_rawgeti(L, d, (lua_Integer)k + 1);
        if (ty == LUA_TSTRING) names[k] = lua_tostring(L, -1);
        else dims[k] = int_value(L, -1, "a dimension");
        lua_pop(L, 1);
    }
    v->dims = dims;
    v->dim_names = names;
}

/* Moves every stack slot above base into the anchor table at a, which keeps
 * the scratch arrays alive until the write is done. */
static void anchor(lua_State *L, int a, int base) {
    while (lua_gettop(L) > base) lua_rawseti(L, a, (lua_Integer)lua_rawlen(L, a) + 1);
}

static int l_onnx_write(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    lua_newtable(L);
    const int A = 3;
    lpnx_onnx_model m;
    memset(&m, 0, sizeof m);
    lua_getfield(L, 2, "ir_version");
    m.ir_version = int_value(L, -1, "ir_version");
    lua_getfield(L, 2, "opset");
    m.opset = int_value(L, -1, "opset");
    lua_pop(L, 2);
    m.producer_name = opt_string(L, 2, "producer_name");
    m.producer_version = opt_string(L, 2, "producer_version");
    m.graph_name = opt_string(L, 2, "graph_name");
    m.doc = opt_string(L, 2, "doc");

    m.n_nodes = table_field(L, 2, "nodes", "model");
    int nodes = lua_gettop(L);
    lpnx_onnx_node *nd = scratch(L, m.n_nodes, sizeof *nd);
    m.nodes = nd;
    for (size_t i = 0; i < m.n_nodes; i++) {
        luaL_checkstack(L, 20, WHERE);
        if (lua_rawgeti(L, nodes, (lua_Integer)i + 1) != LUA_TTABLE) luaL_error(L, WHERE ": nodes[%d] must be a table", (int)i + 1);
        int t = lua_gettop(L);
        nd[i].op_type = req_string(L, t, "op", "node");
        nd[i].name = opt_string(L, t, "name");
        const char *name = nd[i].name ? nd[i].name : nd[i].op_type;
        nd[i].n_inputs = table_field(L, t, "inputs", name);
        nd[i].inputs = strings(L, lua_gettop(L), nd[i].n_inputs, "inputs");
        nd[i].n_outputs = table_field(L, t, "outputs", name);
        nd[i].outputs = strings(L, lua_gettop(L), nd[i].n_outputs, "outputs");
        int ty = lua_getfield(L, t, "attrs");
        if (ty == LUA_TTABLE) {
            int at = lua_gettop(L);
            nd[i].n_attrs = (size_t)lua_rawlen(L, at);
            lpnx_onnx_attr *attrs = scratch(L, nd[i].n_attrs, sizeof *attrs);
            for (size_t j = 0; j < nd[i].n_attrs; j++) {
                if (lua_rawgeti(L, at, (lua_Integer)j + 1) != LUA_TTABLE)
                    luaL_error(L, WHERE ": node %s: attrs[%d] must be {name, kind, value}", name, (int)j + 1);
                read_attr(L, lua_gettop(L), &attrs[j], name);
                anchor(L, A, at + 1);
            }
            nd[i].attrs = attrs;
        } else if (ty != LUA_TNIL) {
            luaL_error(L, WHERE ": node %s: attrs must be a table", name);
        }
        anchor(L, A, t - 1);
    }

    m.n_inits = table_field(L, 2, "initializers", "model");
    int inits = lua_gettop(L);
    lpnx_onnx_initializer *in = scratch(L, m.n_inits, sizeof *in);
    m.inits = in;
    int64_t *all_dims = scratch(L, m.n_inits * LPNX_MAXDIM, sizeof *all_dims);
    for (size_t i = 0; i < m.n_inits; i++) {
        if (lua_rawgeti(L, inits, (lua_Integer)i + 1) != LUA_TTABLE)
            luaL_error(L, WHERE ": initializers[%d] must be a table", (int)i + 1);
        int t = lua_gettop(L);
        in[i].name = req_string(L, t, "name", "initializer");
        in[i].dims = all_dims + i * LPNX_MAXDIM;
        lua_getfield(L, t, "tensor");
        lpnx_Tensor *x = lpnx_testtensor(L, -1);
        if (x) {
            if (!x->storage) luaL_error(L, WHERE ": initializer %s: tensor was closed", in[i].name);
            if (!lpnx_tensor_is_contiguous(x)) luaL_error(L, WHERE ": initializer %s: tensor must be contiguous", in[i].name);
            in[i].elem = LPNX_ONNX_FLOAT32;
            in[i].ndim = (size_t)x->ndim;
            for (int d = 0; d < x->ndim; d++) all_dims[i * LPNX_MAXDIM + d] = x->size[d];
            in[i].data = lpnx_tensor_data(x);
            lua_pop(L, 1);
        } else {
            lua_pop(L, 1);
            size_t n = table_field(L, t, "ints", in[i].name);
            in[i].elem = LPNX_ONNX_INT64;
            in[i].ndim = 1;
            all_dims[i * LPNX_MAXDIM] = (int64_t)n;
            in[i].data = ints(L, lua_gettop(L), n, in[i].name);
        }
        anchor(L, A, t - 1);
    }

    m.n_inputs = table_field(L, 2, "inputs", "model");
    int ins = lua_gettop(L);
    m.n_outputs = table_field(L, 2, "outputs", "model");
    int outs = lua_gettop(L);
    lpnx_onnx_value *vals = scratch(L, m.n_inputs + m.n_outputs, sizeof *vals);
    for (size_t i = 0; i < m.n_inputs + m.n_outputs; i++) {
        int src = i < m.n_inputs ? ins : outs;
        lua_Integer k = i < m.n_inputs ? (lua_Integer)i + 1 : (lua_Integer)(i - m.n_inputs) + 1;
        if (lua_rawgeti(L, src, k) != LUA_TTABLE) luaL_error(L, WHERE ": inputs and outputs must be tables");
        int t = lua_gettop(L);
        read_value(L, t, &vals[i], i < m.n_inputs ? "input" : "output");
        anchor(L, A, t - 1);
    }
    m.inputs = vals;
    m.outputs = vals + m.n_inputs;

    int ty = lua_getfield(L, 2, "metadata");
    if (ty == LUA_TTABLE) {
        int t = lua_gettop(L);
        m.n_meta = (size_t)lua_rawlen(L, t);
        const char **keys = scratch(L, m.n_meta, sizeof *keys);
        const char **values = scratch(L, m.n_meta, sizeof *values);
        for (size_t i = 0; i < m.n_meta; i++) {
            if (lua_rawgeti(L, t, (lua_Integer)i + 1) != LUA_TTABLE) luaL_error(L, WHERE ": metadata[%d] must be {key, value}", (int)i + 1);
            keys[i] = string_at(L, lua_gettop(L), 1, "metadata");
            values[i] = string_at(L, lua_gettop(L), 2, "metadata");
            lua_pop(L, 1);
        }
        m.meta_keys = keys;
        m.meta_values = values;
    } else if (ty != LUA_TNIL) {
        luaL_error(L, WHERE ": metadata must be a list of {key, value}");
    }

    char err[1024];
    if (lpnx_onnx_write(path, &m, err, sizeof err) != 0) {
        lua_pushstring(L, err); /* "path: reason", without a position */
        return lua_error(L);
    }
    return 0;
}

static const luaL_Reg functions[] = {{"_onnx_write", l_onnx_write}, {NULL, NULL}};

void lpnx_open_onnx(lua_State *L) { luaL_setfuncs(L, functions, 0); }
