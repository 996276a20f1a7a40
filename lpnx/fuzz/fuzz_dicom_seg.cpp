/* libFuzzer target: DICOM Segmentation reading (lpnx_dicom_seg_open and the
 * unpacking of every segment's frames). The reader loads files through
 * DCMTK, so each input is written to a file in /dev/shm first (removed at
 * exit). */
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

extern "C" {
#include "../io/dicom_seg.h"
}

extern "C" int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static volatile size_t sink;
static char path[64];

static void remove_input(void) { unlink(path); }

static size_t length(const char *s) { return s ? std::strlen(s) : 0; }

extern "C" int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (!path[0]) {
        std::snprintf(path, sizeof path, "/dev/shm/lpnx-fuzz-dicom-seg-%d.dcm", (int)getpid());
        std::atexit(remove_input);
    }
    FILE *f = std::fopen(path, "wb");
    if (!f) return 0;
    size_t written = std::fwrite(data, 1, size, f);
    if (std::fclose(f) != 0 || written != size) return 0;
    char err[1024];
    lpnx_seg *s = nullptr;
    if (lpnx_dicom_seg_open(&s, path, err, sizeof err) != 0) return 0;
    const lpnx_seg_info *info = lpnx_dicom_seg_info_of(s);
    size_t hw = (size_t)info->rows * (size_t)info->columns;
    for (int i = 0; i < info->nsegments; i++) {
        int number = info->segments[i].number;
        int frames = lpnx_dicom_seg_frames(s, number);
        size_t n = (size_t)(frames > 0 ? frames : 1) * hw;
        if (n > (1u << 24)) continue; /* valid but huge: not this target's concern */
        float *out = static_cast<float *>(std::malloc(n * sizeof(float)));
        if (out) lpnx_dicom_seg_mask(s, number, out);
        std::free(out);
    }
    /* every string the info points to must be readable */
    size_t total = 0;
    for (int i = 0; i < LPNX_SEG_NSTRINGS; i++) total += length(info->strings[i].value);
    for (int i = 0; i < info->nsegments; i++) {
        const lpnx_seg_segment *g = &info->segments[i];
        total += length(g->label) + length(g->description) + length(g->algorithm_type) + length(g->algorithm_name) +
                 length(g->category.value) + length(g->category.scheme) + length(g->category.meaning) +
                 length(g->type.value) + length(g->type.scheme) + length(g->type.meaning);
    }
    for (int i = 0; i < info->nreferences; i++) {
        const lpnx_seg_reference *r = &info->references[i];
        total += length(r->sop_class_uid) + length(r->sop_instance_uid) + length(r->series_instance_uid);
    }
    sink = total;
    lpnx_dicom_seg_close(s);
    return 0;
}
