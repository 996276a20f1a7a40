/* Shared helpers of the Lua bindings: typed getters, tensor creation that
 * raises a Lua error (never returns NULL), argument checks
 * (bind_tensor.c), whole files, option tables and shape text
 * (bind_util.c). Binding files use these and never each other. */
#ifndef LPNX_BIND_H
#define LPNX_BIND_H

#include <lauxlib.h>
#include <lua.h>

#include "../ops/ops.h"
#include "../tensor.h"

#define LPNX_TENSOR_MT "lpnx.Tensor"
#define LPNX_GENERATOR_MT "lpnx.Generator"
/* Registry key of the default generator (manual_seed resets it). */
#define LPNX_DEFAULT_GENERATOR "lpnx.default_generator"

/* The tensor at stack index i, or an argument error naming i. */
lpnx_Tensor *lpnx_checktensor(lua_State *L, int i);
/* The tensor at i, or NULL when it is something else. */
lpnx_Tensor *lpnx_testtensor(lua_State *L, int i);
/* Pushes a tensor userdata in the empty state (safe to collect). */
lpnx_Tensor *lpnx_pushempty(lua_State *L);
/* Pushes a new contiguous tensor; raises "not enough memory for a 2x3
 * tensor" or a size error instead of returning on failure. */
lpnx_Tensor *lpnx_pushnew(lua_State *L, int ndim, const int64_t *size, int zero);
/* Pushes a new contiguous copy of src. */
lpnx_Tensor *lpnx_pushcopy(lua_State *L, const lpnx_Tensor *src);
/* The tensor at i, or an argument error; "tensor was closed" when it was. */
lpnx_Tensor *lpnx_checklive(lua_State *L, int i);
/* Pushes a view sharing t's storage. */
lpnx_Tensor *lpnx_pushview(lua_State *L, const lpnx_Tensor *t);
/* A contiguous version of the tensor at i: itself, or a copy pushed onto
 * the stack (owned by Lua, so it is freed even if a later check raises). */
lpnx_Tensor *lpnx_checkcontiguous(lua_State *L, int i);

/* Reads sizes given as numbers from index first on, or as one table at
 * first. Returns ndim; stops at the first non-number (its index goes to
 * *next when next != NULL). Raises on bad sizes. */
int lpnx_checksizes(lua_State *L, int first, int64_t *size, int *next);
/* Sizes from the numbers at first..last (last < 0: up to the first
 * non-number); the index after them goes to *next when next != NULL. */
int lpnx_readsizes(lua_State *L, int first, int last, int64_t *size, int *next);
/* An integer argument; what names it in the error. */
int64_t lpnx_checkint(lua_State *L, int arg, const char *what);
/* A 1-based dim (negatives count from the end) -> 0-based, or raises. */
int lpnx_checkdim(lua_State *L, int arg, int ndim);

/* A whole file held by a Lua userdata (bind_util.c): the collector frees
 * bytes, so a Lua error raised while it is decoded leaks nothing. */
typedef struct {
    unsigned char *bytes; /* (len) the file, malloc'd; NULL once freed */
    size_t len;
} lpnx_file_bytes;
/* Reads the file at path into a holder pushed on the stack; raises
 * "where: path: reason" when it cannot be read. */
lpnx_file_bytes *lpnx_pushfile(lua_State *L, const char *path, const char *where);
/* Frees the bytes now rather than at collection (safe twice). */
void lpnx_freefile(lpnx_file_bytes *fb);

/* Raises an argument error naming arg ("unknown option 'x' (expected one
 * of a, b)") unless every key of the table at arg (an absolute index) is
 * one of keys (NULL-terminated). */
void lpnx_checkkeys(lua_State *L, int arg, const char *const *keys);

/* The generator at i when it is one, else the default generator. */
lpnx_rng *lpnx_optgenerator(lua_State *L, int i);
/* The Lua state's default generator (kept in the registry). */
lpnx_rng *lpnx_default_generator(lua_State *L);

lpnx_operand lpnx_operand_of(const lpnx_Tensor *t);

/* Each opener adds its functions to the module table on top of the stack. */
void lpnx_open_tensor(lua_State *L);
void lpnx_open_random(lua_State *L);
void lpnx_open_io(lua_State *L);
void lpnx_open_torch(lua_State *L); /* l_torch.c: PyTorch checkpoints, as data */
void lpnx_open_onnx(lua_State *L);  /* l_onnx.c: ONNX files from a graph described in Lua */

/* File formats and image operations: each adds one sub-table to the module
 * table on top of the stack (lpnx.core.dicom, .png, .rle, .csv, .image, .draw, .sys, .net). */
void lpnx_open_dicom(lua_State *L); /* l_dicom.c */
void lpnx_open_png(lua_State *L);   /* l_png.c */
void lpnx_open_rle(lua_State *L);   /* l_rle.c: rle and csv */
void lpnx_open_image(lua_State *L, int ridx); /* l_image.c; its oracles into ridx.image */
void lpnx_open_draw(lua_State *L);  /* l_draw.c: drawing for synthetic images */
void lpnx_open_sys(lua_State *L);   /* l_sys.c: processes, pipes, signals, clocks, fsync */
void lpnx_open_net(lua_State *L);   /* l_net.c: DICOM networking (storage SCP, C-STORE and C-ECHO SCU) */

/* Kernel families add their fast kernels to the table at stack index kidx
 * (lpnx.core.kernels) and the bindings of the oracles, with the same
 * signatures, to the table at ridx: what the lpnx.ref module returns once
 * it has handed lpnx.core the oracles (ref/ref_table.h). */
void lpnx_open_ref(lua_State *L, int ridx);              /* l_ref.c: matmul */
void lpnx_open_conv(lua_State *L, int kidx, int ridx);   /* l_conv.c */
void lpnx_open_layers(lua_State *L, int kidx, int ridx); /* l_layers.c: bn, pool, upsample, activations */
void lpnx_open_loss(lua_State *L, int kidx, int ridx);   /* l_loss.c: losses */
void lpnx_open_optim(lua_State *L, int kidx, int ridx);  /* l_optim.c: optimizer updates */

/* Registers the metatable name with __gc = gc (once; later calls do
 * nothing), for a userdata that owns C memory. */
void lpnx_gcmeta(lua_State *L, const char *name, lua_CFunction gc);
/* Sets the functions of reg (luaL_setfuncs) into the table at idx. */
void lpnx_setfuncs(lua_State *L, int idx, const luaL_Reg *reg);

/* The oracles' table that the lpnx.ref module hands over
 * (ref/ref_table.h); raises when lpnx.ref was not loaded. */
struct lpnx_ref_table;
const struct lpnx_ref_table *lpnx_oracles(lua_State *L);

/* Writes t's sizes as "(64,3,7,7)" ("scalar" for a 0-dim tensor) into
 * buf (len bytes, cut short if need be); returns buf. */
const char *lpnx_shape_of(char *buf, size_t len, const lpnx_Tensor *t);
/* 1 when a and b share storage over overlapping spans (a strided tensor
 * counts as its whole span); NULLs never overlap. */
int lpnx_overlaps(const lpnx_Tensor *a, const lpnx_Tensor *b);

/* Shared argument checks for kernel bindings. */
/* The (N,C,H,W) tensor at i, contiguous: itself, or a copy pushed onto the
 * stack; an argument error showing the shape otherwise. */
lpnx_Tensor *lpnx_checknchw(lua_State *L, int i);
/* Raises unless t has exactly the given sizes (ndim of them); what names it. */
void lpnx_checkshape(lua_State *L, int arg, const lpnx_Tensor *t, int ndim, const int64_t *size);
/* Raises, naming arg, when t shares memory with a tensor at one of the
 * stack indices in args (0-terminated; non-tensors skipped), except the
 * very same view at index same (0 for none); what names t and names the
 * others in the message. */
void lpnx_checkdisjoint(lua_State *L, int arg, const char *what, const lpnx_Tensor *t, const int *args, int same,
                        const char *names);
/* The output buffer at arg: NULL for nil (the caller then makes a new
 * tensor); otherwise the caller's own contiguous tensor with exactly the
 * ndim sizes, disjoint from the tensors at args as lpnx_checkdisjoint
 * says. what names the buffer, role what it holds and names the others,
 * in messages. */
lpnx_Tensor *lpnx_optoutput(lua_State *L, int arg, const char *what, const char *role, int ndim,
                            const int64_t *size, const int *args, int same, const char *names);
/* A contiguous tensor at i, not a copy: kernels that write into it need
 * the caller's own storage. */
lpnx_Tensor *lpnx_checkcontiguous_inplace(lua_State *L, int i);

#endif
