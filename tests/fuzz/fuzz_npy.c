/* libFuzzer target: the .npy reader (npy_read_f32). */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_input.h"
#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    float *values = NULL;
    int64_t shape[8];
    int ndim = 0;
    char err[512];
    if (npy_read_f32(fuzz_input_path(data, size), &values, shape, &ndim, err, sizeof err) != 0)
        return 0;
    size_t count = 1;
    for (int i = 0; i < ndim; i++) count *= (size_t)shape[i];
    volatile float sum = 0;
    for (size_t i = 0; i < count; i++) sum += values[i];   /* every element must be readable */
    (void)sum;
    free(values);
    return 0;
}
