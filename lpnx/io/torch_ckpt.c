/* PyTorch's zip checkpoints: see torch_ckpt.h. */
#include "torch_ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zip.h>

#include "safetensors.h"

/* Largest data.pkl read (a state dict's pickle is kilobytes to a few MB). */
#define MAX_PICKLE (256u << 20)

typedef struct {
    char key[65];
    float *data; /* the storage as float32, numel elements */
    int64_t numel;
} storage_cache;

/* A storage of a legacy file: where its elements start in the file. */
typedef struct {
    char key[65];
    size_t offset;
    int64_t numel;
} legacy_record;

struct lpnx_torch_ckpt {
    zip_t *zip;               /* the zip format; NULL for a legacy file */
    unsigned char *legacy;    /* a legacy file, whole */
    size_t legacy_len;
    legacy_record *records;   /* its storages, in the file's order */
    size_t nrecords;
    char *path;
    char prefix[256]; /* "archive/" and the like, with its slash */
    lpnx_pk_result parsed;
    storage_cache *cache;
    size_t ncache, capcache;
};

static void say(char *err, size_t errlen, const char *path, const char *msg) {
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", path, msg);
}

/* Reads a whole record into a new buffer of *n bytes (at most max). */
static unsigned char *read_record(lpnx_torch_ckpt *c, const char *name, size_t max, size_t *n, char *why,
                                  size_t whylen) {
    zip_int64_t idx = zip_name_locate(c->zip, name, 0);
    zip_stat_t st;
    zip_file_t *f;
    unsigned char *buf;
    zip_int64_t got;
    if (idx < 0) {
        snprintf(why, whylen, "the archive has no %s", name);
        return NULL;
    }
    zip_stat_init(&st);
    if (zip_stat_index(c->zip, (zip_uint64_t)idx, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
        snprintf(why, whylen, "cannot read the size of %s: %s", name, zip_strerror(c->zip));
        return NULL;
    }
    if (st.size > max) {
        snprintf(why, whylen, "%s is %llu bytes (at most %zu are read)", name, (unsigned long long)st.size, max);
        return NULL;
    }
    buf = (unsigned char *)malloc(st.size ? (size_t)st.size : 1);
    if (buf == NULL) {
        snprintf(why, whylen, "out of memory for %s (%llu bytes)", name, (unsigned long long)st.size);
        return NULL;
    }
    f = zip_fopen_index(c->zip, (zip_uint64_t)idx, 0);
    if (f == NULL) {
        snprintf(why, whylen, "cannot open %s: %s", name, zip_strerror(c->zip));
        free(buf);
        return NULL;
    }
    got = st.size ? zip_fread(f, buf, st.size) : 0;
    if (got < 0 || (zip_uint64_t)got != st.size) {
        snprintf(why, whylen, "cannot read %s: %s", name, got < 0 ? zip_file_strerror(f) : "it ends early");
        zip_fclose(f);
        free(buf);
        return NULL;
    }
    {
        /* one more read reaches the record's end, where libzip checks its CRC-32 */
        unsigned char extra;
        zip_int64_t more = zip_fread(f, &extra, 1);
        if (more != 0) {
            snprintf(why, whylen, "%s is damaged (%s)", name,
                     more < 0 ? zip_file_strerror(f) : "longer than the archive says");
            zip_fclose(f);
            free(buf);
            return NULL;
        }
    }
    if (zip_fclose(f) != 0) {
        snprintf(why, whylen, "%s is damaged (its checksum or compressed data is wrong)", name);
        free(buf);
        return NULL;
    }
    *n = (size_t)st.size;
    return buf;
}

/* ---- the legacy format (PyTorch before 1.6) ---------------------------
 * One file of consecutive pickles: the magic number, the protocol version
 * (1001), a dict of facts about the writer (little_endian, type sizes), the
 * object itself (storages as persistent ids), the list of storage keys;
 * then, for each key in that order, the storage's element count as an
 * 8-byte integer and its elements, raw, in the writer's byte order. */

/* LONG1 of 10 bytes, 0x1950a86a20f9469cfc6c little-endian, and STOP */
static const unsigned char LEGACY_MAGIC[13] = {0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                                0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};

/* The length of the magic-number pickle at the start of b (PROTO 2-5, a
 * FRAME from protocol 4 on, the number, STOP), or 0 when it is not there. */
static size_t legacy_magic(const unsigned char *b, size_t len) {
    size_t pos = 2;
    if (len < 2 || b[0] != 0x80 || b[1] < 2 || b[1] > 5)
        return 0;
    if (len > pos && b[pos] == 0x95)
        pos += 9;
    if (len < pos + sizeof LEGACY_MAGIC || memcmp(b + pos, LEGACY_MAGIC, sizeof LEGACY_MAGIC) != 0)
        return 0;
    return pos + sizeof LEGACY_MAGIC;
}

/* The storage value named key (key_len bytes) anywhere under v, or NULL. */
static const lpnx_pk_value *find_storage(const lpnx_pk_value *v, const char *key, size_t key_len, int depth) {
    size_t i;
    if (v == NULL || depth > LPNX_PK_MAX_DEPTH)
        return NULL;
    switch (v->kind) {
    case LPNX_PK_STORAGE:
        return v->u.storage.key_len == key_len && memcmp(v->u.storage.key, key, key_len) == 0 ? v : NULL;
    case LPNX_PK_TENSOR:
        return find_storage(v->u.tensor.storage, key, key_len, depth + 1);
    case LPNX_PK_TUPLE:
    case LPNX_PK_LIST:
    case LPNX_PK_DICT:
        for (i = 0; i < v->u.seq.n; i++) {
            const lpnx_pk_value *f = find_storage(v->u.seq.items[i], key, key_len, depth + 1);
            if (f != NULL)
                return f;
        }
        return NULL;
    default:
        return NULL;
    }
}

static int same_str(const lpnx_pk_value *v, const char *s) {
    return v != NULL && v->kind == LPNX_PK_STR && v->u.str.len == strlen(s) && memcmp(v->u.str.s, s, v->u.str.len) == 0;
}

/* Reads the legacy file at c->path into c; 0, or -1 with the reason in why. */
static int open_legacy(lpnx_torch_ckpt *c, char *why, size_t whylen) {
    FILE *fh = fopen(c->path, "rb");
    size_t pos = 0, used = 0, i;
    lpnx_pk_result part;
    char perr[512];
    long end;
    if (fh == NULL || fseek(fh, 0, SEEK_END) != 0 || (end = ftell(fh)) < 0 || fseek(fh, 0, SEEK_SET) != 0) {
        if (fh)
            fclose(fh);
        snprintf(why, whylen, "cannot read it");
        return -1;
    }
    c->legacy_len = (size_t)end;
    c->legacy = (unsigned char *)malloc(c->legacy_len ? c->legacy_len : 1);
    if (c->legacy == NULL || fread(c->legacy, 1, c->legacy_len, fh) != c->legacy_len) {
        fclose(fh);
        snprintf(why, whylen, c->legacy ? "cannot read it" : "out of memory");
        return -1;
    }
    fclose(fh);
    if ((pos = legacy_magic(c->legacy, c->legacy_len)) == 0) {
        snprintf(why, whylen, "a bare pickle without PyTorch's magic number: not a PyTorch checkpoint");
        return -1;
    }
    /* the protocol version, then the writer's facts */
    for (i = 0; i < 2; i++) {
        if (lpnx_pk_parse_prefix(c->legacy + pos, c->legacy_len - pos, &part, &used, perr, sizeof perr) != 0) {
            snprintf(why, whylen, "legacy header, pickle %zu: %.400s", i + 2, perr);
            return -1;
        }
        if (i == 0 && (part.root->kind != LPNX_PK_INT || part.root->u.i != 1001)) {
            lpnx_pk_free(&part);
            snprintf(why, whylen, "legacy format of an unknown protocol version (1001 expected)");
            return -1;
        }
        if (i == 1) {
            size_t k;
            if (part.root->kind != LPNX_PK_DICT) {
                lpnx_pk_free(&part);
                snprintf(why, whylen, "legacy header: the writer's facts are not a dict");
                return -1;
            }
            for (k = 0; k + 1 < part.root->u.seq.n; k += 2) {
                const lpnx_pk_value *val = part.root->u.seq.items[k + 1];
                if (same_str(part.root->u.seq.items[k], "little_endian") &&
                    !(val->kind == LPNX_PK_BOOL && val->u.b)) {
                    lpnx_pk_free(&part);
                    snprintf(why, whylen, "a big-endian checkpoint is not read");
                    return -1;
                }
            }
        }
        lpnx_pk_free(&part);
        pos += used;
    }
    if (lpnx_pk_parse_prefix(c->legacy + pos, c->legacy_len - pos, &c->parsed, &used, perr, sizeof perr) != 0) {
        snprintf(why, whylen, "the legacy checkpoint's object: %.400s", perr);
        return -1;
    }
    pos += used;
    if (lpnx_pk_parse_prefix(c->legacy + pos, c->legacy_len - pos, &part, &used, perr, sizeof perr) != 0) {
        snprintf(why, whylen, "the legacy checkpoint's storage keys: %.400s", perr);
        return -1;
    }
    pos += used;
    if (part.root->kind != LPNX_PK_LIST) {
        lpnx_pk_free(&part);
        snprintf(why, whylen, "the legacy checkpoint's storage keys are not a list");
        return -1;
    }
    c->records = (legacy_record *)calloc(part.root->u.seq.n + 1, sizeof *c->records);
    if (c->records == NULL) {
        lpnx_pk_free(&part);
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    for (i = 0; i < part.root->u.seq.n; i++) {
        const lpnx_pk_value *key = part.root->u.seq.items[i], *st;
        legacy_record *r = &c->records[i];
        uint64_t numel = 0;
        size_t b, esize;
        if (key->kind != LPNX_PK_STR || key->u.str.len == 0 || key->u.str.len >= sizeof r->key) {
            lpnx_pk_free(&part);
            snprintf(why, whylen, "a legacy storage key is not a short string");
            return -1;
        }
        st = find_storage(c->parsed.root, key->u.str.s, key->u.str.len, 0);
        memcpy(r->key, key->u.str.s, key->u.str.len);
        if (st == NULL) {
            snprintf(why, whylen, "legacy storage %s is listed but no tensor uses it", r->key);
            lpnx_pk_free(&part);
            return -1;
        }
        if (c->legacy_len - pos < 8) {
            snprintf(why, whylen, "the file ends before storage %s (truncated)", r->key);
            lpnx_pk_free(&part);
            return -1;
        }
        for (b = 0; b < 8; b++)
            numel |= (uint64_t)c->legacy[pos + b] << (8 * b);
        pos += 8;
        esize = lpnx_pk_dtype_size(st->u.storage.dtype);
        if (numel != (uint64_t)st->u.storage.numel || numel > (uint64_t)(c->legacy_len - pos) / esize) {
            snprintf(why, whylen, numel != (uint64_t)st->u.storage.numel
                                      ? "legacy storage %s holds %llu elements, its tensors name %lld"
                                      : "the file ends inside storage %s (truncated)",
                     r->key, (unsigned long long)numel, (long long)st->u.storage.numel);
            lpnx_pk_free(&part);
            return -1;
        }
        r->offset = pos;
        r->numel = (int64_t)numel;
        pos += (size_t)numel * esize;
        c->nrecords++;
    }
    lpnx_pk_free(&part);
    if (pos != c->legacy_len) {
        snprintf(why, whylen, "%zu bytes after the last storage", c->legacy_len - pos);
        return -1;
    }
    return 0;
}

lpnx_torch_ckpt *lpnx_torch_open(const char *path, char *err, size_t errlen) {
    lpnx_torch_ckpt *c;
    int zerr = 0;
    zip_int64_t i, n;
    char why[512], name[300];
    unsigned char *pkl;
    size_t pkl_len = 0;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    c = (lpnx_torch_ckpt *)calloc(1, sizeof *c);
    if (c == NULL || (c->path = strdup(path)) == NULL) {
        free(c);
        say(err, errlen, path, "out of memory");
        return NULL;
    }
    c->zip = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &zerr);
    if (c->zip == NULL) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, zerr);
        unsigned char head[4] = {0};
        FILE *fh = NULL;
        if (zerr == ZIP_ER_NOZIP && (fh = fopen(path, "rb")) != NULL) {
            if (fread(head, 1, sizeof head, fh) != sizeof head)
                memset(head, 0, sizeof head);
            fclose(fh);
        }
        if (zerr == ZIP_ER_NOENT || zerr == ZIP_ER_OPEN || zerr == ZIP_ER_READ || zerr == ZIP_ER_SEEK)
            snprintf(why, sizeof why, "cannot read it (%s)", zip_error_strerror(&ze));
        else if (zerr == ZIP_ER_NOZIP && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5) {
            zip_error_fini(&ze);
            if (open_legacy(c, why, sizeof why) == 0)
                return c;
            say(err, errlen, path, why);
            lpnx_torch_close(c);
            return NULL;
        }
        else if (zerr == ZIP_ER_NOZIP && head[0] == 'P' && head[1] == 'K')
            snprintf(why, sizeof why, "a damaged or truncated zip archive (libzip: %s)", zip_error_strerror(&ze));
        else
            snprintf(why, sizeof why, "not a PyTorch checkpoint (%s)", zip_error_strerror(&ze));
        zip_error_fini(&ze);
        say(err, errlen, path, why);
        lpnx_torch_close(c);
        return NULL;
    }
    /* the one record named PREFIX/data.pkl, PREFIX without a slash */
    n = zip_get_num_entries(c->zip, 0);
    for (i = 0; i < n; i++) {
        const char *e = zip_get_name(c->zip, (zip_uint64_t)i, 0);
        const char *slash = e ? strchr(e, '/') : NULL;
        if (slash != NULL && strcmp(slash, "/data.pkl") == 0 && (size_t)(slash - e) + 1 < sizeof c->prefix) {
            if (c->prefix[0] != '\0') {
                say(err, errlen, path, "the archive holds more than one data.pkl");
                lpnx_torch_close(c);
                return NULL;
            }
            memcpy(c->prefix, e, (size_t)(slash - e) + 1);
            c->prefix[slash - e + 1] = '\0';
        }
    }
    if (c->prefix[0] == '\0') {
        say(err, errlen, path, "a zip archive without a FOLDER/data.pkl: not a PyTorch checkpoint");
        lpnx_torch_close(c);
        return NULL;
    }
    snprintf(name, sizeof name, "%sbyteorder", c->prefix);
    if (zip_name_locate(c->zip, name, 0) >= 0) {
        size_t bl = 0;
        unsigned char *bo = read_record(c, name, 64, &bl, why, sizeof why);
        if (bo == NULL || bl != 6 || memcmp(bo, "little", 6) != 0) {
            free(bo);
            say(err, errlen, path, bo ? "a big-endian checkpoint (byteorder is not 'little') is not read" : why);
            lpnx_torch_close(c);
            return NULL;
        }
        free(bo);
    }
    snprintf(name, sizeof name, "%sdata.pkl", c->prefix);
    pkl = read_record(c, name, MAX_PICKLE, &pkl_len, why, sizeof why);
    if (pkl == NULL) {
        say(err, errlen, path, why);
        lpnx_torch_close(c);
        return NULL;
    }
    if (lpnx_pk_parse(pkl, pkl_len, &c->parsed, why, sizeof why) != 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s: %s", name, why);
        say(err, errlen, path, msg);
        free(pkl);
        lpnx_torch_close(c);
        return NULL;
    }
    free(pkl);
    return c;
}

const lpnx_pk_value *lpnx_torch_root(const lpnx_torch_ckpt *c) {
    return c ? c->parsed.root : NULL;
}

static lpnx_st_dtype st_type(lpnx_pk_dtype t) {
    switch (t) {
    case LPNX_PK_F32: return LPNX_ST_F32;
    case LPNX_PK_F16: return LPNX_ST_F16;
    case LPNX_PK_BF16: return LPNX_ST_BF16;
    case LPNX_PK_F64: return LPNX_ST_F64;
    case LPNX_PK_I64: return LPNX_ST_I64;
    case LPNX_PK_I32: return LPNX_ST_I32;
    case LPNX_PK_I16: return LPNX_ST_I16;
    case LPNX_PK_I8: return LPNX_ST_I8;
    case LPNX_PK_U8: return LPNX_ST_U8;
    default: return LPNX_ST_BOOL;
    }
}

/* The storage of t as float32, read and converted on first use. */
static const storage_cache *storage_of(lpnx_torch_ckpt *c, const lpnx_pk_value *st, char *err, size_t errlen) {
    size_t i, len = 0, esize = lpnx_pk_dtype_size(st->u.storage.dtype);
    char name[400], why[512];
    unsigned char *owned = NULL; /* a zip record read here; a legacy storage is read in place */
    const unsigned char *bytes;
    storage_cache *sc;
    for (i = 0; i < c->ncache; i++)
        if (strlen(c->cache[i].key) == st->u.storage.key_len &&
            memcmp(c->cache[i].key, st->u.storage.key, st->u.storage.key_len) == 0) {
            if (c->cache[i].numel != st->u.storage.numel) {
                snprintf(why, sizeof why, "storage %s is named with %lld and with %lld elements", c->cache[i].key,
                         (long long)c->cache[i].numel, (long long)st->u.storage.numel);
                say(err, errlen, c->path, why);
                return NULL;
            }
            return &c->cache[i];
        }
    if ((uint64_t)st->u.storage.numel > (uint64_t)(SIZE_MAX / 8) / esize) {
        say(err, errlen, c->path, "a storage too large for memory");
        return NULL;
    }
    snprintf(name, sizeof name, "%sdata/%s", c->prefix, st->u.storage.key);
    if (c->legacy != NULL) {
        const legacy_record *r = NULL;
        for (i = 0; i < c->nrecords && r == NULL; i++)
            if (strlen(c->records[i].key) == st->u.storage.key_len &&
                memcmp(c->records[i].key, st->u.storage.key, st->u.storage.key_len) == 0)
                r = &c->records[i];
        if (r == NULL) {
            snprintf(why, sizeof why, "storage %.64s is not among the legacy file's storages", st->u.storage.key);
            say(err, errlen, c->path, why);
            return NULL;
        }
        len = (size_t)r->numel * esize;
        bytes = c->legacy + r->offset;
    } else {
        bytes = owned = read_record(c, name, (size_t)st->u.storage.numel * esize * 2 + 64, &len, why, sizeof why);
    }
    if (bytes == NULL) {
        say(err, errlen, c->path, why);
        return NULL;
    }
    if (len != (size_t)st->u.storage.numel * esize) {
        snprintf(why, sizeof why, "%s holds %zu bytes, but its storage is %lld elements of %s (%zu bytes)", name,
                 len, (long long)st->u.storage.numel, lpnx_pk_dtype_name(st->u.storage.dtype),
                 (size_t)st->u.storage.numel * esize);
        say(err, errlen, c->path, why);
        free(owned);
        return NULL;
    }
    if (c->ncache == c->capcache) {
        size_t ncap = c->capcache ? c->capcache * 2 : 16;
        storage_cache *nc = (storage_cache *)realloc(c->cache, ncap * sizeof *nc);
        if (nc == NULL) {
            free(owned);
            say(err, errlen, c->path, "out of memory");
            return NULL;
        }
        c->cache = nc;
        c->capcache = ncap;
    }
    sc = &c->cache[c->ncache];
    memset(sc, 0, sizeof *sc);
    memcpy(sc->key, st->u.storage.key, st->u.storage.key_len);
    sc->numel = st->u.storage.numel;
    sc->data = (float *)malloc(sc->numel > 0 ? (size_t)sc->numel * sizeof(float) : 1);
    if (sc->data == NULL) {
        free(owned);
        say(err, errlen, c->path, "out of memory for a storage");
        return NULL;
    }
    lpnx_st_convert_f32(sc->data, bytes, (size_t)sc->numel, st_type(st->u.storage.dtype));
    free(owned);
    c->ncache++;
    return sc;
}

int lpnx_torch_tensor_f32(lpnx_torch_ckpt *c, const lpnx_pk_value *t, float *out, char *err, size_t errlen) {
    const storage_cache *sc;
    int64_t idx[LPNX_PK_MAXDIM] = {0};
    int nd, d;
    size_t k = 0;
    if (c == NULL || t == NULL || t->kind != LPNX_PK_TENSOR) {
        say(err, errlen, c ? c->path : "?", "not a tensor of this checkpoint");
        return -1;
    }
    sc = storage_of(c, t->u.tensor.storage, err, errlen);
    if (sc == NULL)
        return -1;
    nd = t->u.tensor.ndim;
    for (d = 0; d < nd; d++)
        if (t->u.tensor.size[d] == 0)
            return 0;
    /* row-major walk over the sizes; the parser checked every element
     * offset + sum(idx * stride) lies inside the storage */
    for (;;) {
        int64_t at = t->u.tensor.offset;
        for (d = 0; d < nd; d++)
            at += idx[d] * t->u.tensor.stride[d];
        out[k++] = sc->data[at];
        for (d = nd - 1; d >= 0; d--) {
            if (++idx[d] < t->u.tensor.size[d])
                break;
            idx[d] = 0;
        }
        if (d < 0)
            break;
    }
    return 0;
}

void lpnx_torch_close(lpnx_torch_ckpt *c) {
    size_t i;
    if (c == NULL)
        return;
    if (c->zip != NULL)
        zip_discard(c->zip);
    free(c->legacy);
    free(c->records);
    lpnx_pk_free(&c->parsed);
    for (i = 0; i < c->ncache; i++)
        free(c->cache[i].data);
    free(c->cache);
    free(c->path);
    free(c);
}
