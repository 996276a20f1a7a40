/* JPEG 2000 decoding from memory with OpenJPEG (j2k.h). OpenJPEG's
 * messages go to handlers that keep the first error (never to stderr);
 * strict mode makes a truncated codestream an error instead of a partly
 * decoded image. */
#include "j2k.h"

#include <openjpeg-2.5/openjpeg.h> /* Debian keeps it there; its own includes are relative */

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The bytes OpenJPEG reads, and its first error message. */
typedef struct {
    const unsigned char *data;
    size_t n, pos;
    char message[200];
} Source;

static OPJ_SIZE_T source_read(void *buffer, OPJ_SIZE_T count, void *user) {
    Source *s = user;
    size_t left = s->n - s->pos;
    if (left == 0) return (OPJ_SIZE_T)-1; /* OpenJPEG's end of stream */
    if (count > left) count = left;
    memcpy(buffer, s->data + s->pos, count);
    s->pos += count;
    return count;
}

static OPJ_OFF_T source_skip(OPJ_OFF_T count, void *user) {
    Source *s = user;
    if (count < 0) {
        if ((size_t)(-count) > s->pos) count = -(OPJ_OFF_T)s->pos;
    } else if ((size_t)count > s->n - s->pos) {
        count = (OPJ_OFF_T)(s->n - s->pos);
    }
    s->pos = (size_t)((OPJ_OFF_T)s->pos + count);
    return count;
}

static OPJ_BOOL source_seek(OPJ_OFF_T to, void *user) {
    Source *s = user;
    if (to < 0 || (size_t)to > s->n) return OPJ_FALSE;
    s->pos = (size_t)to;
    return OPJ_TRUE;
}

/* Keeps the first error, without its trailing newline. */
static void on_error(const char *msg, void *user) {
    Source *s = user;
    if (s->message[0] || !msg) return;
    snprintf(s->message, sizeof s->message, "%s", msg);
    size_t len = strlen(s->message);
    while (len > 0 && (s->message[len - 1] == '\n' || s->message[len - 1] == ' ')) s->message[--len] = '\0';
}

static void on_other(const char *msg, void *user) {
    (void)msg;
    (void)user;
}

static const unsigned char jp2_signature[12] = {0, 0, 0, 12, 'j', 'P', ' ', ' ', 13, 10, 0x87, 10};

/* " (OpenJPEG: ...)" or "" */
static const char *detail(const Source *s, char *buf, size_t len) {
    if (!s->message[0]) return "";
    snprintf(buf, len, " (OpenJPEG: %s)", s->message);
    return buf;
}

int lpnx_j2k_decode(void *out, const unsigned char *data, size_t n, const lpnx_j2k_want *want,
                    lpnx_j2k_got *got, char *err, size_t errlen) {
    lpnx_j2k_got none;
    if (!got) got = &none;
    memset(got, 0, sizeof *got);
    if (!want || !data) {
        set_err(err, errlen, "no JPEG 2000 data");
        return -1;
    }
    OPJ_CODEC_FORMAT format;
    if (n >= 4 && data[0] == 0xFF && data[1] == 0x4F && data[2] == 0xFF && data[3] == 0x51) {
        format = OPJ_CODEC_J2K;
    } else if (n >= 12 && memcmp(data, jp2_signature, 12) == 0) {
        format = OPJ_CODEC_JP2;
        got->jp2 = 1;
    } else {
        set_err(err, errlen, "the frame is neither a JPEG 2000 codestream (no SOC and SIZ markers at its start) nor a JP2 file");
        return -1;
    }

    Source src = {data, n, 0, {0}};
    opj_codec_t *codec = opj_create_decompress(format);
    opj_stream_t *stream = opj_stream_create(64 * 1024, OPJ_TRUE);
    opj_image_t *image = NULL;
    int rc = -1;
    char more[240];
    if (!codec || !stream) {
        set_err(err, errlen, "not enough memory");
        goto done;
    }
    opj_set_error_handler(codec, on_error, &src);
    opj_set_warning_handler(codec, on_other, &src);
    opj_set_info_handler(codec, on_other, &src);
    opj_stream_set_user_data(stream, &src, NULL);
    opj_stream_set_user_data_length(stream, (OPJ_UINT64)n);
    opj_stream_set_read_function(stream, source_read);
    opj_stream_set_skip_function(stream, source_skip);
    opj_stream_set_seek_function(stream, source_seek);

    opj_dparameters_t params;
    opj_set_default_decoder_parameters(&params);
    if (!opj_setup_decoder(codec, &params) || !opj_decoder_set_strict_mode(codec, OPJ_TRUE)) {
        set_err(err, errlen, "cannot set up the JPEG 2000 decoder%s", detail(&src, more, sizeof more));
        goto done;
    }
    if (!opj_read_header(stream, codec, &image) || !image) {
        set_err(err, errlen, "cannot read the JPEG 2000 header%s", detail(&src, more, sizeof more));
        goto done;
    }
    if (image->x1 <= image->x0 || image->y1 <= image->y0 || image->numcomps < 1) {
        set_err(err, errlen, "the JPEG 2000 codestream declares an empty image");
        goto done;
    }
    got->columns = (int)(image->x1 - image->x0);
    got->rows = (int)(image->y1 - image->y0);
    got->components = (int)image->numcomps;
    got->precision = (int)image->comps[0].prec;
    got->is_signed = image->comps[0].sgnd ? 1 : 0;
    if (got->rows != want->rows || got->columns != want->columns || got->components != want->samples) {
        set_err(err, errlen,
                "the JPEG 2000 codestream is %d x %d with %d component%s; the data set declares %d rows x %d columns x %d sample%s",
                got->rows, got->columns, got->components, got->components == 1 ? "" : "s", want->rows,
                want->columns, want->samples, want->samples == 1 ? "" : "s");
        goto done;
    }
    for (OPJ_UINT32 k = 0; k < image->numcomps; k++) {
        const opj_image_comp_t *c = &image->comps[k];
        if (c->dx != 1 || c->dy != 1) {
            set_err(err, errlen, "JPEG 2000 component %u is subsampled (%u x %u), which DICOM does not allow",
                    (unsigned)k + 1, (unsigned)c->dx, (unsigned)c->dy);
            goto done;
        }
        if ((int)c->prec != got->precision || (c->sgnd ? 1 : 0) != got->is_signed) {
            set_err(err, errlen, "the JPEG 2000 components differ in precision or signedness");
            goto done;
        }
    }
    if (got->precision < 1 || got->precision > want->bits_allocated || got->precision > 31) {
        set_err(err, errlen, "the JPEG 2000 samples have %d bits, more than BitsAllocated %d", got->precision,
                want->bits_allocated);
        goto done;
    }
    double values = (double)got->rows * got->columns * got->components;
    if (values > LPNX_J2K_MAX_VALUES) {
        set_err(err, errlen, "JPEG 2000 frame too large to decode (%d x %d x %d values, more than %.0f)", got->rows,
                got->columns, got->components, LPNX_J2K_MAX_VALUES);
        goto done;
    }
    if (!out) {
        rc = 0;
        goto done;
    }
    if (!opj_decode(codec, stream, image) || !opj_end_decompress(codec, stream)) {
        set_err(err, errlen, "cannot decode the JPEG 2000 codestream%s", detail(&src, more, sizeof more));
        goto done;
    }
    size_t hw = (size_t)got->rows * (size_t)got->columns;
    for (OPJ_UINT32 k = 0; k < image->numcomps; k++) {
        const opj_image_comp_t *c = &image->comps[k];
        if (!c->data || (size_t)c->w * c->h != hw) {
            set_err(err, errlen, "the JPEG 2000 decoder returned component %u incomplete", (unsigned)k + 1);
            goto done;
        }
    }

    /* more bits than BitsStored: every value must fit it */
    if (got->precision > want->bits_stored) {
        int bs = want->bits_stored;
        int64_t lo = want->pixel_representation ? -((int64_t)1 << (bs - 1)) : 0;
        int64_t hi = want->pixel_representation ? ((int64_t)1 << (bs - 1)) - 1 : ((int64_t)1 << bs) - 1;
        for (OPJ_UINT32 k = 0; k < image->numcomps; k++) {
            const OPJ_INT32 *v = image->comps[k].data;
            for (size_t i = 0; i < hw; i++) {
                if (v[i] < lo || v[i] > hi) {
                    set_err(err, errlen,
                            "the JPEG 2000 samples have %d bits and a value (%ld) outside BitsStored %d (%s)",
                            got->precision, (long)v[i], bs,
                            want->pixel_representation ? "PixelRepresentation 1" : "PixelRepresentation 0");
                    goto done;
                }
            }
        }
    }

    /* the stored words, clamped to the codestream's range */
    {
        int prec = got->precision;
        int32_t lo = got->is_signed ? -(int32_t)(1u << (prec - 1)) : 0;
        int32_t hi = got->is_signed ? (int32_t)(1u << (prec - 1)) - 1 : (int32_t)((1u << prec) - 1);
        size_t samples = (size_t)image->numcomps;
        for (size_t k = 0; k < samples; k++) {
            const OPJ_INT32 *src_k = image->comps[k].data;
            if (want->bits_allocated == 8) {
                uint8_t *o = (uint8_t *)out + k;
                for (size_t i = 0; i < hw; i++) {
                    int32_t v = src_k[i];
                    v = v < lo ? lo : v > hi ? hi : v;
                    o[i * samples] = (uint8_t)(uint32_t)v;
                }
            } else {
                uint16_t *o = (uint16_t *)out + k;
                for (size_t i = 0; i < hw; i++) {
                    int32_t v = src_k[i];
                    v = v < lo ? lo : v > hi ? hi : v;
                    o[i * samples] = (uint16_t)(uint32_t)v;
                }
            }
        }
    }
    rc = 0;
done:
    if (image) opj_image_destroy(image);
    if (stream) opj_stream_destroy(stream);
    if (codec) opj_destroy_codec(codec);
    return rc;
}
