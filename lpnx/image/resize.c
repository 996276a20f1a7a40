/* Area resizing (adaptive average pooling) and flips. Nearest and bilinear
 * resizing are the network's upsample kernels (ops/upsample.c), which the
 * binding calls directly. One task per output row. */
#include <string.h>

#include "image.h"

/* PyTorch's adaptive pooling window of output o for in -> out:
 * [floor(o*in/out), ceil((o+1)*in/out)), exact in integers. */
static int64_t window_start(int64_t o, int64_t in, int64_t out) { return o * in / out; }
static int64_t window_end(int64_t o, int64_t in, int64_t out) { return ((o + 1) * in + out - 1) / out; }

void lpnx_image_resize_area(float *out, const float *inp, int64_t planes,
                            int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    /* out: (planes,Ho,Wo); inp: (planes,H,W) */
    if (Ho == 1 && Wo == 1) {
        /* PyTorch computes a 1x1 adaptive average as input.mean(): its
         * reduction rounds like a sum in double, not like this loop. */
        #pragma omp parallel for schedule(static) if (planes * H * W >= LPNX_PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++) {
            double sum = 0;
            for (int64_t i = 0; i < H * W; i++) sum += inp[p * H * W + i];
            out[p] = (float)(sum / (double)(H * W));
        }
        return;
    }
    const int64_t rows = planes * Ho;
    #pragma omp parallel for schedule(static) if (planes * H * W + rows * Wo >= LPNX_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t p = r / Ho, oh = r % Ho;
        const int64_t h0 = window_start(oh, H, Ho), h1 = window_end(oh, H, Ho);
        const float *plane = inp + p * H * W;
        float *o = out + r * Wo;
        for (int64_t ow = 0; ow < Wo; ow++) {
            const int64_t w0 = window_start(ow, W, Wo), w1 = window_end(ow, W, Wo);
            float sum = 0; /* PyTorch 1.13 sums floats in float, row by row */
            for (int64_t ih = h0; ih < h1; ih++) {
                const float *row = plane + ih * W;
                for (int64_t iw = w0; iw < w1; iw++) sum += row[iw];
            }
            o[ow] = sum / (float)(h1 - h0) / (float)(w1 - w0);
        }
    }
}

void lpnx_image_hflip(float *out, const float *inp, int64_t planes, int64_t H, int64_t W) {
    /* out, inp: (planes,H,W) */
    const int64_t rows = planes * H;
    #pragma omp parallel for schedule(static) if (rows * W >= LPNX_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *i = inp + r * W;
        float *o = out + r * W;
        for (int64_t x = 0; x < W; x++) o[x] = i[W - 1 - x];
    }
}

void lpnx_image_vflip(float *out, const float *inp, int64_t planes, int64_t H, int64_t W) {
    /* out, inp: (planes,H,W) */
    const int64_t rows = planes * H;
    #pragma omp parallel for schedule(static) if (rows * W >= LPNX_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t p = r / H, y = r % H;
        memcpy(out + r * W, inp + (p * H + H - 1 - y) * W, (size_t)W * sizeof *out);
    }
}
