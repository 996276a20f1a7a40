/* ONNX models (onnx.proto's ModelProto) written with protobuf-c, from a
 * graph described in plain C: nodes with attributes, float32 and int64
 * initializers (stored as raw little-endian data), typed graph inputs and
 * outputs whose dimensions are numbers or names (a name is a dynamic
 * dimension, "batch"), and metadata properties. What graph to write is the
 * caller's business: this file only encodes it.
 *
 * Plain C99, no Lua, no global state; the file is written atomically
 * (file.h), and every error is a message in the caller's buffer that names
 * the file. */
#ifndef LPNX_IO_ONNX_H
#define LPNX_IO_ONNX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LPNX_ONNX_INT,    /* i */
    LPNX_ONNX_INTS,   /* ints[n] */
    LPNX_ONNX_FLOAT,  /* f */
    LPNX_ONNX_FLOATS, /* floats[n] */
    LPNX_ONNX_STRING  /* s */
} lpnx_onnx_attr_type;

typedef struct {
    const char *name;
    lpnx_onnx_attr_type type;
    int64_t i;
    float f;
    const char *s;
    const int64_t *ints;
    const float *floats;
    size_t n;
} lpnx_onnx_attr;

typedef struct {
    const char *op_type;
    const char *name;          /* may be NULL */
    const char *const *inputs; /* "" for an omitted optional input */
    size_t n_inputs;
    const char *const *outputs;
    size_t n_outputs;
    const lpnx_onnx_attr *attrs;
    size_t n_attrs;
} lpnx_onnx_node;

typedef enum { LPNX_ONNX_FLOAT32 = 1, LPNX_ONNX_INT64 = 7 } lpnx_onnx_elem;

typedef struct {
    const char *name;
    lpnx_onnx_elem elem;
    const int64_t *dims;
    size_t ndim;
    const void *data; /* prod(dims) elements in host order (float or int64_t) */
} lpnx_onnx_initializer;

/* A graph input or output of elem type: dimension k is dim_names[k] when
 * that is non-NULL (dim_names itself may be NULL), else dims[k]. */
typedef struct {
    const char *name;
    lpnx_onnx_elem elem;
    const int64_t *dims;
    const char *const *dim_names;
    size_t ndim;
} lpnx_onnx_value;

typedef struct {
    int64_t ir_version;
    int64_t opset; /* of the default domain */
    const char *producer_name, *producer_version, *graph_name, *doc;
    const lpnx_onnx_node *nodes;
    size_t n_nodes;
    const lpnx_onnx_initializer *inits;
    size_t n_inits;
    const lpnx_onnx_value *inputs;
    size_t n_inputs;
    const lpnx_onnx_value *outputs;
    size_t n_outputs;
    const char *const *meta_keys;
    const char *const *meta_values;
    size_t n_meta;
} lpnx_onnx_model;

/* Encodes m and writes it to path atomically. Returns 0, or -1 with
 * "path: reason" in err (out of memory, a model over protobuf's 2 GiB, a
 * failed write); a file already at path is then untouched. */
int lpnx_onnx_write(const char *path, const lpnx_onnx_model *m, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
