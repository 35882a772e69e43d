/* libFuzzer target: the IDX image reader (raw and gzipped), padded to 32 x 32 as training
 * does, and unpadded. */
#include <stdint.h>

#include "data.h"
#include "fuzz_input.h"

static void load(const char *path, int pad_to) {
    Dataset d;
    char err[512];
    if (dataset_load_idx(&d, path, pad_to, 0, err, sizeof err) == 0) {
        volatile uint8_t last = d.images[(size_t)d.count * d.height * d.width * d.channels - 1];
        (void)last;
    }
    dataset_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_path(data, size);
    load(path, 32);
    load(path, 0);
    return 0;
}
