/* libFuzzer target: DICOM reading through DCMTK (every registered codec).
 * DCMTK reads files, so each input is written to a file in /dev/shm first. */
#include <cstdio>
#include <cstdlib>
#include <unistd.h>

extern "C" {
#include "../io/dicom.h"
}

extern "C" int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

extern "C" int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    static char path[64];
    if (!path[0]) std::snprintf(path, sizeof path, "/dev/shm/lpnx-fuzz-dicom-%d.dcm", (int)getpid());
    FILE *f = std::fopen(path, "wb");
    if (!f) return 0;
    std::fwrite(data, 1, size, f);
    std::fclose(f);
    char err[512];
    lpnx_dicom *d = nullptr;
    if (lpnx_dicom_open(&d, path, 1, err, sizeof err) == 0) {
        const lpnx_dicom_info *info = lpnx_dicom_info_of(d);
        size_t n = (size_t)(size_t)info->channels * info->rows * info->columns;
        if (n <= (1u << 24)) {
            float *out = static_cast<float *>(std::malloc(n * sizeof(float)));
            if (out) lpnx_dicom_pixels(d, out);
            std::free(out);
        }
        lpnx_dicom_close(d);
    }
    return 0;
}
