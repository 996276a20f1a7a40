/* ONNX models through protobuf-c: the caller's plain description is turned
 * into onnx.proto's messages (onnx.pb-c.h, generated at build time from the
 * schema the onnx package installs) and streamed into the file. */
#include "onnx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <onnx.pb-c.h>

#include "file.h"

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -1)

/* Everything one write allocates, freed together. */
typedef struct {
    Onnx__NodeProto *nodes;
    Onnx__NodeProto **node_ptrs;
    Onnx__AttributeProto *attrs;
    Onnx__AttributeProto **attr_ptrs;
    Onnx__TensorProto *inits;
    Onnx__TensorProto **init_ptrs;
    void **swapped; /* byte-swapped copies of initializer data (big-endian hosts) */
    Onnx__ValueInfoProto *values;
    Onnx__ValueInfoProto **value_ptrs;
    Onnx__TypeProto *types;
    Onnx__TypeProto__Tensor *tensor_types;
    Onnx__TensorShapeProto *shapes;
    Onnx__TensorShapeProto__Dimension *dims;
    Onnx__TensorShapeProto__Dimension **dim_ptrs;
    Onnx__StringStringEntryProto *meta;
    Onnx__StringStringEntryProto **meta_ptrs;
    size_t n_swapped;
} arena;

static void arena_free(arena *a) {
    free(a->nodes);
    free(a->node_ptrs);
    free(a->attrs);
    free(a->attr_ptrs);
    free(a->inits);
    free(a->init_ptrs);
    for (size_t i = 0; i < a->n_swapped; i++) free(a->swapped[i]);
    free(a->swapped);
    free(a->values);
    free(a->value_ptrs);
    free(a->types);
    free(a->tensor_types);
    free(a->shapes);
    free(a->dims);
    free(a->dim_ptrs);
    free(a->meta);
    free(a->meta_ptrs);
}

static int little_endian(void) {
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* The elements of an initializer as raw little-endian bytes. */
static int raw_data(arena *a, const lpnx_onnx_initializer *in, size_t count, ProtobufCBinaryData *out) {
    size_t width = in->elem == LPNX_ONNX_INT64 ? 8 : 4;
    out->len = count * width;
    if (little_endian() || count == 0) {
        out->data = (uint8_t *)(uintptr_t)in->data;
        return 0;
    }
    unsigned char *copy = malloc(out->len);
    if (!copy) return -1;
    const unsigned char *src = in->data;
    for (size_t e = 0; e < count; e++)
        for (size_t b = 0; b < width; b++) copy[e * width + b] = src[e * width + width - 1 - b];
    a->swapped[a->n_swapped++] = copy;
    out->data = copy;
    return 0;
}

static void fill_attr(Onnx__AttributeProto *p, const lpnx_onnx_attr *at) {
    onnx__attribute_proto__init(p);
    p->name = (char *)at->name;
    p->has_type = 1;
    switch (at->type) {
    case LPNX_ONNX_INT:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
        p->has_i = 1;
        p->i = at->i;
        break;
    case LPNX_ONNX_INTS:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
        p->n_ints = at->n;
        p->ints = (int64_t *)at->ints;
        break;
    case LPNX_ONNX_FLOAT:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
        p->has_f = 1;
        p->f = at->f;
        break;
    case LPNX_ONNX_FLOATS:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
        p->n_floats = at->n;
        p->floats = (float *)at->floats;
        break;
    case LPNX_ONNX_STRING:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
        p->has_s = 1;
        p->s.data = (uint8_t *)at->s;
        p->s.len = strlen(at->s);
        break;
    }
}

/* A ProtobufCBuffer that appends to the atomic file, keeping the first error. */
typedef struct {
    ProtobufCBuffer base;
    lpnx_atomic_file *f;
    int failed;
    char *err;
    size_t errlen;
} file_buffer;

static void file_append(ProtobufCBuffer *buffer, size_t len, const uint8_t *data) {
    file_buffer *fb = (file_buffer *)buffer;
    if (fb->failed) return;
    if (lpnx_atomic_write(fb->f, data, len, fb->err, fb->errlen) != 0) fb->failed = 1;
}

int lpnx_onnx_write(const char *path, const lpnx_onnx_model *m, char *err, size_t errlen) {
    arena a;
    memset(&a, 0, sizeof a);
    size_t n_attrs = 0, n_dims = 0, n_values = m->n_inputs + m->n_outputs;
    for (size_t i = 0; i < m->n_nodes; i++) n_attrs += m->nodes[i].n_attrs;
    for (size_t i = 0; i < m->n_inputs; i++) n_dims += m->inputs[i].ndim;
    for (size_t i = 0; i < m->n_outputs; i++) n_dims += m->outputs[i].ndim;
    a.nodes = calloc(m->n_nodes + 1, sizeof *a.nodes);
    a.node_ptrs = calloc(m->n_nodes + 1, sizeof *a.node_ptrs);
    a.attrs = calloc(n_attrs + 1, sizeof *a.attrs);
    a.attr_ptrs = calloc(n_attrs + 1, sizeof *a.attr_ptrs);
    a.inits = calloc(m->n_inits + 1, sizeof *a.inits);
    a.init_ptrs = calloc(m->n_inits + 1, sizeof *a.init_ptrs);
    a.swapped = calloc(m->n_inits + 1, sizeof *a.swapped);
    a.values = calloc(n_values + 1, sizeof *a.values);
    a.value_ptrs = calloc(n_values + 1, sizeof *a.value_ptrs);
    a.types = calloc(n_values + 1, sizeof *a.types);
    a.tensor_types = calloc(n_values + 1, sizeof *a.tensor_types);
    a.shapes = calloc(n_values + 1, sizeof *a.shapes);
    a.dims = calloc(n_dims + 1, sizeof *a.dims);
    a.dim_ptrs = calloc(n_dims + 1, sizeof *a.dim_ptrs);
    a.meta = calloc(m->n_meta + 1, sizeof *a.meta);
    a.meta_ptrs = calloc(m->n_meta + 1, sizeof *a.meta_ptrs);
    if (!a.nodes || !a.node_ptrs || !a.attrs || !a.attr_ptrs || !a.inits || !a.init_ptrs || !a.swapped ||
        !a.values || !a.value_ptrs || !a.types || !a.tensor_types || !a.shapes || !a.dims || !a.dim_ptrs ||
        !a.meta || !a.meta_ptrs) {
        arena_free(&a);
        return ERR("%s: out of memory describing the ONNX graph", path);
    }

    size_t ka = 0;
    for (size_t i = 0; i < m->n_nodes; i++) {
        const lpnx_onnx_node *nd = &m->nodes[i];
        Onnx__NodeProto *p = &a.nodes[i];
        onnx__node_proto__init(p);
        p->op_type = (char *)nd->op_type;
        p->name = (char *)nd->name;
        p->n_input = nd->n_inputs;
        p->input = (char **)nd->inputs;
        p->n_output = nd->n_outputs;
        p->output = (char **)nd->outputs;
        p->n_attribute = nd->n_attrs;
        p->attribute = &a.attr_ptrs[ka];
        for (size_t j = 0; j < nd->n_attrs; j++, ka++) {
            fill_attr(&a.attrs[ka], &nd->attrs[j]);
            a.attr_ptrs[ka] = &a.attrs[ka];
        }
        a.node_ptrs[i] = p;
    }

    for (size_t i = 0; i < m->n_inits; i++) {
        const lpnx_onnx_initializer *in = &m->inits[i];
        Onnx__TensorProto *p = &a.inits[i];
        onnx__tensor_proto__init(p);
        size_t count = 1;
        for (size_t d = 0; d < in->ndim; d++) count *= (size_t)in->dims[d];
        p->name = (char *)in->name;
        p->n_dims = in->ndim;
        p->dims = (int64_t *)in->dims;
        p->has_data_type = 1;
        p->data_type = (int32_t)in->elem;
        p->has_raw_data = 1;
        if (raw_data(&a, in, count, &p->raw_data) != 0) {
            arena_free(&a);
            return ERR("%s: out of memory for initializer %s", path, in->name);
        }
        a.init_ptrs[i] = p;
    }

    size_t kd = 0;
    for (size_t i = 0; i < n_values; i++) {
        const lpnx_onnx_value *v = i < m->n_inputs ? &m->inputs[i] : &m->outputs[i - m->n_inputs];
        Onnx__ValueInfoProto *p = &a.values[i];
        onnx__value_info_proto__init(p);
        onnx__type_proto__init(&a.types[i]);
        onnx__type_proto__tensor__init(&a.tensor_types[i]);
        onnx__tensor_shape_proto__init(&a.shapes[i]);
        p->name = (char *)v->name;
        p->type = &a.types[i];
        a.types[i].value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
        a.types[i].tensor_type = &a.tensor_types[i];
        a.tensor_types[i].has_elem_type = 1;
        a.tensor_types[i].elem_type = (int32_t)v->elem;
        a.tensor_types[i].shape = &a.shapes[i];
        a.shapes[i].n_dim = v->ndim;
        a.shapes[i].dim = &a.dim_ptrs[kd];
        for (size_t d = 0; d < v->ndim; d++, kd++) {
            Onnx__TensorShapeProto__Dimension *dim = &a.dims[kd];
            onnx__tensor_shape_proto__dimension__init(dim);
            if (v->dim_names && v->dim_names[d]) {
                dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
                dim->dim_param = (char *)v->dim_names[d];
            } else {
                dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
                dim->dim_value = v->dims[d];
            }
            a.dim_ptrs[kd] = dim;
        }
        a.value_ptrs[i] = p;
    }

    for (size_t i = 0; i < m->n_meta; i++) {
        onnx__string_string_entry_proto__init(&a.meta[i]);
        a.meta[i].key = (char *)m->meta_keys[i];
        a.meta[i].value = (char *)m->meta_values[i];
        a.meta_ptrs[i] = &a.meta[i];
    }

    Onnx__GraphProto graph;
    onnx__graph_proto__init(&graph);
    graph.name = (char *)m->graph_name;
    graph.doc_string = (char *)m->doc;
    graph.n_node = m->n_nodes;
    graph.node = a.node_ptrs;
    graph.n_initializer = m->n_inits;
    graph.initializer = a.init_ptrs;
    graph.n_input = m->n_inputs;
    graph.input = a.value_ptrs;
    graph.n_output = m->n_outputs;
    graph.output = a.value_ptrs + m->n_inputs;

    Onnx__OperatorSetIdProto opset;
    Onnx__OperatorSetIdProto *opsets[1] = {&opset};
    onnx__operator_set_id_proto__init(&opset);
    opset.domain = (char *)"";
    opset.has_version = 1;
    opset.version = m->opset;

    Onnx__ModelProto model;
    onnx__model_proto__init(&model);
    model.has_ir_version = 1;
    model.ir_version = m->ir_version;
    model.n_opset_import = 1;
    model.opset_import = opsets;
    model.producer_name = (char *)m->producer_name;
    model.producer_version = (char *)m->producer_version;
    model.graph = &graph;
    model.n_metadata_props = m->n_meta;
    model.metadata_props = a.meta_ptrs;

    /* protobuf's own limit: a message over 2 GiB cannot be parsed back */
    size_t size = onnx__model_proto__get_packed_size(&model);
    if (size > 0x7fffffffu) {
        arena_free(&a);
        return ERR("%s: the model is %zu bytes, over protobuf's 2 GiB limit", path, size);
    }
    lpnx_atomic_file f;
    if (lpnx_atomic_begin(&f, path, err, errlen) != 0) {
        arena_free(&a);
        return -1;
    }
    file_buffer fb;
    memset(&fb, 0, sizeof fb);
    fb.base.append = file_append;
    fb.f = &f;
    fb.err = err;
    fb.errlen = errlen;
    size_t written = onnx__model_proto__pack_to_buffer(&model, &fb.base);
    arena_free(&a);
    if (fb.failed) return -1; /* lpnx_atomic_write removed the temporary file */
    if (written != size) {
        lpnx_atomic_abort(&f);
        return ERR("%s: protobuf wrote %zu bytes of %zu", path, written, size);
    }
    return lpnx_atomic_commit(&f, err, errlen) < 0 ? -1 : 0;
}
