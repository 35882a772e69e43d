/* Datasets held in memory: uint8 NHWC images from MNIST/Fashion-MNIST IDX files
 * (gzipped or raw), CIFAR-10 binary batches and folders of PNG/JPEG files, with their
 * class labels when the source has them; or float NHWC data (cached latents). */
#ifndef DDPM_DATA_H
#define DDPM_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct {
    uint8_t *images;     /* (count, height, width, channels), or NULL for float data */
    float *values;       /* (count, height, width, channels) float data, or NULL */
    int32_t *labels;     /* (count) class of each sample in [0, num_classes), or NULL */
    int num_classes;     /* 0 without labels */
    int count, height, width, channels;
    char **class_names;  /* (num_classes) folder datasets: label i is class_names[i] */
    int skipped;         /* folder datasets: files skipped because they did not decode */
} Dataset;

/* IDX3 image file (magic 0x00000803), optionally gzip-compressed; the images are
 * zero-padded symmetrically to pad_to x pad_to (pad_to 0 keeps the size).
 * limit > 0 keeps only the first `limit` images. The labels are read from the IDX1
 * file beside it, named with "labels-idx1" for "images-idx3" (as MNIST and
 * Fashion-MNIST ship them), when that file exists; its count must equal the images'.
 * Returns 0, or -1 with err = "<path>: <problem>" (truncated, wrong magic, ...). */
int dataset_load_idx(Dataset *d, const char *path, int pad_to, int limit, char *err,
                     size_t err_size);
/* CIFAR-10 binary batches: files data_batch_1.bin .. data_batch_5.bin in dir
 * (or test_batch.bin when test != 0), records of 1 label byte + 3072 bytes CHW.
 * The labels are kept (10 classes).
 * Returns 0, or -1 with err naming the file and the problem. */
int dataset_load_cifar10(Dataset *d, const char *dir, int test, int limit, char *err,
                         size_t err_size);
/* The labels file that goes with an IDX image file ("...images-idx3..." ->
 * "...labels-idx1..."); returns 0, or -1 when the name has no "images-idx3". */
int idx_labels_path(const char *images_path, char *out, size_t out_size);
/* Float data (cached latents) from a safetensors file: tensor "latents" F32 of shape
 * (N, H, W, C), and optionally "labels" I32 or I64 of shape (N) in [0, 2^31). limit > 0
 * keeps the first `limit` samples. Returns 0, or -1 with err naming the file and the
 * problem. */
int dataset_load_latents(Dataset *d, const char *path, int limit, char *err, size_t err_size);
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
