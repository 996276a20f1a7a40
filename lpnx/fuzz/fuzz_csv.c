/* libFuzzer target: the RFC 4180 CSV parser. */
#include "../io/csv.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    lpnx_csv c;
    lpnx_csv_error e;
    if (lpnx_csv_parse(&c, data, size, &e) == 0) lpnx_csv_free(&c);
    return 0;
}
