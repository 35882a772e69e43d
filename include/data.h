/* Image datasets held in memory as uint8 NHWC: MNIST/Fashion-MNIST IDX files
 * (gzipped or raw), CIFAR-10 binary batches and folders of PNG/JPEG files. */
#ifndef DDPM_DATA_H
#define DDPM_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct {
    uint8_t *images;     /* (count, height, width, channels) */
    int count, height, width, channels;
    int32_t *labels;     /* (count) class of each image; NULL when the source has none */
    int num_classes;
    char **class_names;  /* (num_classes) folder datasets: label i is class_names[i] */
    int skipped;         /* folder datasets: files skipped because they did not decode */
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
/* A folder laid out like torchvision's ImageFolder: DIR/<class>/.../<image>.png|jpg|jpeg.
 * Classes are the subfolders in sorted order (label i = i-th name); a folder without
 * subfolders is one class ".". Files are taken in sorted path order. Each image is
 * resized so that its shorter side is `size` (box filter: the area average), then
 * center-cropped to size x size, as grey (channels 1) or RGB (channels 3).
 * A file that does not decode stops the load with its name, or with skip_bad is
 * skipped and counted in d->skipped. Returns 0, or -1 with err naming the problem. */
int dataset_load_folder(Dataset *d, const char *dir, int size, int channels, int limit,
                        int skip_bad, char *err, size_t err_size);
/* Writes {"classes": [names in label order], "counts": [...]} (folder datasets). */
int dataset_write_classes(const Dataset *d, const char *path, char *err, size_t err_size);
/* The config's dataset from path (its data_path, or eval's --data): test selects
 * CIFAR-10's test batch; limit > 0 keeps the first `limit` images. */
int dataset_load_configured(Dataset *d, const Config *c, const char *path, int test, int limit,
                            char *err, size_t err_size);
void dataset_free(Dataset *d);

#endif
