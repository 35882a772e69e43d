/* Image datasets held in memory as uint8 NHWC: MNIST/Fashion-MNIST IDX files
 * (gzipped or raw) and CIFAR-10 binary batches. */
#ifndef DDPM_DATA_H
#define DDPM_DATA_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *images;     /* (count, height, width, channels) */
    int count, height, width, channels;
} Dataset;

/* IDX3 image file (magic 0x00000803), optionally gzip-compressed; the images are
 * zero-padded symmetrically to pad_to x pad_to (pad_to 0 keeps the size).
 * limit > 0 keeps only the first `limit` images.
 * Returns 0, or -1 with err = "<path>: <problem>" (truncated, wrong magic, ...). */
int dataset_load_idx(Dataset *d, const char *path, int pad_to, int limit, char *err,
                     size_t err_size);
/* CIFAR-10 binary batches: files data_batch_1.bin .. data_batch_5.bin in dir
 * (or test_batch.bin when test != 0), records of 1 label byte + 3072 bytes CHW.
 * Returns 0, or -1 with err naming the file and the problem. */
int dataset_load_cifar10(Dataset *d, const char *dir, int test, int limit, char *err,
                         size_t err_size);
void dataset_free(Dataset *d);

#endif
