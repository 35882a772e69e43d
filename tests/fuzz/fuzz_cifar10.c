/* libFuzzer target: the CIFAR-10 batch reader; the input is test_batch.bin. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "data.h"

static char dir[64], batch[96];

static void remove_dir(void) {
    remove(batch);
    remove(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    snprintf(dir, sizeof dir, "/tmp/fuzz_cifar10.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        abort();
    }
    snprintf(batch, sizeof batch, "%s/test_batch.bin", dir);
    atexit(remove_dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(batch, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
        perror(batch);
        abort();
    }
    Dataset d;
    char err[512];
    if (dataset_load_cifar10(&d, dir, 1, 0, err, sizeof err) == 0) {
        volatile uint8_t last = d.images[(size_t)d.count * d.height * d.width * d.channels - 1];
        (void)last;
    }
    dataset_free(&d);
    return 0;
}
