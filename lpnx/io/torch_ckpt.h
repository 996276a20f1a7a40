/* PyTorch checkpoints as torch.save writes them (the zip format of
 * PyTorch 1.6 and later): a zip archive of PREFIX/data.pkl (the object,
 * pickled; see pickle.h), PREFIX/data/KEY (one record per storage, raw
 * little-endian elements) and PREFIX/version (and, from PyTorch 2.1,
 * PREFIX/byteorder). The archive is read with libzip.
 *
 * Plain C99, no Lua, no global state; every error is a message in the
 * caller's buffer that names the file. */
#ifndef LPNX_IO_TORCH_CKPT_H
#define LPNX_IO_TORCH_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "pickle.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lpnx_torch_ckpt lpnx_torch_ckpt;

/* Opens path, reads and parses PREFIX/data.pkl. Returns NULL with the
 * reason in err when the file is not a zip, has no data.pkl, is
 * big-endian, or its pickle is refused. */
lpnx_torch_ckpt *lpnx_torch_open(const char *path, char *err, size_t errlen);

/* The parsed object (owned by the checkpoint). */
const lpnx_pk_value *lpnx_torch_root(const lpnx_torch_ckpt *c);

/* Copies the elements of tensor t (a LPNX_PK_TENSOR of this checkpoint's
 * tree), in row-major order of its sizes, into out as float32 (n =
 * product of the sizes). The storage's record is read once and kept.
 * Checks that the record holds numel elements of its dtype. */
int lpnx_torch_tensor_f32(lpnx_torch_ckpt *c, const lpnx_pk_value *t, float *out, char *err, size_t errlen);

void lpnx_torch_close(lpnx_torch_ckpt *c);

#ifdef __cplusplus
}
#endif

#endif
