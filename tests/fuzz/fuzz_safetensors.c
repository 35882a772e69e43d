/* libFuzzer target: the safetensors reader (st_read) and its accessors. */
#include <stdint.h>
#include <string.h>

#include "fuzz_input.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    StFile f;
    char err[512];
    if (st_read(&f, fuzz_input_path(data, size), err, sizeof err) != 0) return 0;
    volatile unsigned checksum = 0;
    for (int i = 0; i < f.count; i++) {
        const StTensor *t = &f.tensors[i];
        if (st_find(&f, t->name) != t) __builtin_trap();   /* names are unique once read */
        if (t->nbytes > 0) checksum += ((const uint8_t *)t->data)[t->nbytes - 1];
        checksum += (unsigned)st_numel(t);
    }
    for (int i = 0; i < f.meta_count; i++)
        checksum += (unsigned)strlen(st_meta(&f, f.meta_keys[i]));
    (void)checksum;
    st_free(&f);
    return 0;
}
