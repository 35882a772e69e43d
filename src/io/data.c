/* Image datasets loaded into one uint8 NHWC array, with their labels.
 * IDX files (MNIST, Fashion-MNIST) are read through zlib's gz* API, which passes raw
 * files through unchanged, so .gz and uncompressed copies take the same path.
 * CIFAR-10 batches are fixed-size binary records read with plain stdio.
 * Every problem is reported as "<file>: <problem>", and a failed load leaves the
 * Dataset empty, so callers can print the message and dataset_free unconditionally. */
#include "data.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "safetensors.h"
#include "util.h"

/* Far beyond any real dataset, yet keeps counts in int and rejects garbage headers. */
enum { DATASET_MAX_IMAGES = 100000000 };

enum {
    IDX3_UBYTE_MAGIC = 0x00000803, /* 0x08: unsigned bytes, 0x03: three dimensions */
    IDX1_UBYTE_MAGIC = 0x00000801, /* labels: unsigned bytes, one dimension */
    IDX1_HEADER_BYTES = 8,         /* magic, count */
    IDX_HEADER_BYTES = 16,         /* magic, count, rows, cols: big-endian u32 each */
    IDX_MAX_SIDE = 4096,           /* sanity limit that rejects garbage headers early */
    GZ_BUFFER_BYTES = 1 << 17,     /* larger than zlib's 8 KiB default: fewer read calls */
};

enum {
    CIFAR_SIDE = 32,
    CIFAR_CHANNELS = 3,
    CIFAR_PLANE_BYTES = CIFAR_SIDE * CIFAR_SIDE,
    CIFAR_IMAGE_BYTES = CIFAR_CHANNELS * CIFAR_PLANE_BYTES,
    CIFAR_RECORD_BYTES = 1 + CIFAR_IMAGE_BYTES, /* a label byte, then the R, G, B planes */
    CIFAR_TRAIN_BATCHES = 5,
    CIFAR_CLASSES = 10,
    CIFAR_PATH_MAX = 4096,
};

typedef struct {
    uint32_t count, rows, cols;
} IdxHeader;

void dataset_free(Dataset *d) {
    free(d->images);
    free(d->values);
    free(d->labels);
    for (int i = 0; i < d->num_classes && d->class_names; i++) free(d->class_names[i]);
    free(d->class_names);
    *d = (Dataset){0};
}

/* A directory, FIFO or device in place of a data file would fail oddly or block forever
 * (opening a FIFO waits for a writer; /dev/zero never ends): refuse them by type. */
static int require_regular_file(const char *path, char *err, size_t err_size) {
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, err_size, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode)) return 0;
    snprintf(err, err_size, "%s: not a regular file (it is a %s)", path,
             S_ISDIR(st.st_mode) ? "directory" : S_ISFIFO(st.st_mode) ? "FIFO"
             : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "device" : "special file");
    return -1;
}

/* ---- IDX ---- */

static uint32_t read_be32(const unsigned char *bytes) {
    return (uint32_t)bytes[0] << 24 | (uint32_t)bytes[1] << 16 | (uint32_t)bytes[2] << 8 |
           (uint32_t)bytes[3];
}

/* gzerror's message already starts with "<path>: "; drop that so ours does not repeat it. */
static const char *gz_reason(gzFile gz, const char *path, int *errnum) {
    const char *message = gzerror(gz, errnum);
    size_t path_len = strlen(path);
    if (strncmp(message, path, path_len) == 0 && strncmp(message + path_len, ": ", 2) == 0)
        return message + path_len + 2;
    return message;
}

/* Reads up to size bytes (size <= INT_MAX). Returns the count read, which is short only at
 * the end of the data, or -1 with err filled when the stream is corrupt or unreadable.
 * A gzip stream that is merely cut short counts as end of data (*cut_short set), so the
 * caller reports it as truncation with byte counts. */
static long long gz_read_bytes(gzFile gz, void *buf, size_t size, const char *path,
                               int *cut_short, char *err, size_t err_size) {
    int got = gzread(gz, buf, (unsigned)size);
    if (got >= 0 && (size_t)got == size) return got;
    int errnum = Z_OK;
    const char *reason = gz_reason(gz, path, &errnum);
    if (errnum == Z_OK || errnum == Z_BUF_ERROR) {
        *cut_short = errnum == Z_BUF_ERROR;
        return got < 0 ? 0 : got;
    }
    snprintf(err, err_size, "%s: %s: %s", path,
             errnum == Z_ERRNO ? "read failed" : "corrupt gzip stream", reason);
    return -1;
}

static int read_idx_header(gzFile gz, const char *path, IdxHeader *h, char *err,
                           size_t err_size) {
    unsigned char bytes[IDX_HEADER_BYTES];
    int cut_short = 0;
    long long got = gz_read_bytes(gz, bytes, sizeof bytes, path, &cut_short, err, err_size);
    if (got < 0) return -1;
    if (got < IDX_HEADER_BYTES) {
        snprintf(err, err_size, "%s: truncated header: %lld of %d bytes", path, got,
                 IDX_HEADER_BYTES);
        return -1;
    }
    uint32_t magic = read_be32(bytes);
    if (magic != IDX3_UBYTE_MAGIC) {
        snprintf(err, err_size,
                 "%s: wrong magic 0x%08x, expected 0x%08x (an IDX file of uint8 images)", path,
                 (unsigned)magic, (unsigned)IDX3_UBYTE_MAGIC);
        return -1;
    }
    *h = (IdxHeader){read_be32(bytes + 4), read_be32(bytes + 8), read_be32(bytes + 12)};
    int sane = h->count >= 1 && h->count <= DATASET_MAX_IMAGES && h->rows >= 1 &&
               h->rows <= IDX_MAX_SIDE && h->cols >= 1 && h->cols <= IDX_MAX_SIDE;
    if (!sane) {
        snprintf(err, err_size,
                 "%s: invalid dimensions: %u images of %u x %u pixels (allowed: 1..%d images "
                 "of 1..%d x 1..%d)",
                 path, (unsigned)h->count, (unsigned)h->rows, (unsigned)h->cols, DATASET_MAX_IMAGES,
                 IDX_MAX_SIDE, IDX_MAX_SIDE);
        return -1;
    }
    return 0;
}

static int check_padding(const IdxHeader *h, int pad_to, const char *path, char *err,
                         size_t err_size) {
    if (pad_to <= 0) return 0;
    if ((uint32_t)pad_to < h->rows || (uint32_t)pad_to < h->cols) {
        snprintf(err, err_size, "%s: cannot pad %u x %u images to %d x %d: smaller than the image",
                 path, (unsigned)h->rows, (unsigned)h->cols, pad_to, pad_to);
        return -1;
    }
    if (pad_to > IDX_MAX_SIDE) {
        snprintf(err, err_size, "%s: pad size %d exceeds the %d-pixel limit", path, pad_to,
                 IDX_MAX_SIDE);
        return -1;
    }
    return 0;
}

/* Copies a rows x cols image into the centre of a zeroed out_h x out_w one; an odd
 * margin puts the extra pixel at the bottom / right. */
static void place_centered(uint8_t *dst, int out_h, int out_w, const uint8_t *src, int rows,
                           int cols) {
    int top = (out_h - rows) / 2, left = (out_w - cols) / 2;
    for (int y = 0; y < rows; y++)
        memcpy(dst + (size_t)(top + y) * (size_t)out_w + (size_t)left,
               src + (size_t)y * (size_t)cols, (size_t)cols);
}

static void report_truncated_images(const char *path, int count, const IdxHeader *h,
                                    size_t found, int cut_short, char *err, size_t err_size) {
    unsigned long long expected = (unsigned long long)count * h->rows * h->cols;
    snprintf(err, err_size,
             "%s: truncated: %d images of %u x %u need %llu bytes after the header, found %zu%s",
             path, count, (unsigned)h->rows, (unsigned)h->cols, expected, found,
             cut_short ? " (gzip stream ends early)" : "");
}

/* Reads past the last image so zlib consumes the rest of the gzip stream: a file cut
 * before or inside its 8-byte trailer is then reported, where otherwise (all image bytes
 * being there) it would be accepted. zlib detects it whenever it has not yet hit end of
 * file, which covers small images like MNIST's. Bytes after the images are ignored. */
static int verify_gzip_end(gzFile gz, const char *path, char *err, size_t err_size) {
    unsigned char extra;
    int cut_short = 0;
    if (gz_read_bytes(gz, &extra, 1, path, &cut_short, err, err_size) < 0) return -1;
    if (!cut_short) return 0;
    snprintf(err, err_size, "%s: gzip stream ends early, after the last image", path);
    return -1;
}

/* Makes room for at least `needed` images of image_bytes, doubling, zeroed (the padding).
 * Growing as images arrive bounds memory by the bytes really in the file: a corrupt header
 * may claim far more images than it holds. Returns -1 when memory runs out. */
static int grow_images(uint8_t **images, size_t *capacity, size_t needed, size_t image_bytes) {
    if (needed <= *capacity) return 0;
    size_t grown = *capacity ? 2 * *capacity : 64;
    if (grown < needed) grown = needed;
    uint8_t *bigger = realloc(*images, grown * image_bytes);
    if (!bigger) return -1;
    memset(bigger + *capacity * image_bytes, 0, (grown - *capacity) * image_bytes);
    *images = bigger;
    *capacity = grown;
    return 0;
}

/* Reads the first `count` images after the header, padding each as it arrives. */
static int read_idx_images(Dataset *d, gzFile gz, const char *path, const IdxHeader *h,
                           int count, int pad_to, char *err, size_t err_size) {
    int rows = (int)h->rows, cols = (int)h->cols;
    int out_h = pad_to > 0 ? pad_to : rows, out_w = pad_to > 0 ? pad_to : cols;
    size_t image_bytes = (size_t)rows * (size_t)cols;
    size_t out_bytes = (size_t)out_h * (size_t)out_w;
    uint8_t *images = NULL, *scratch = xmalloc(image_bytes);
    size_t capacity = 0;
    int rc = 0;
    for (int i = 0; i < count && rc == 0; i++) {
        int cut_short = 0;
        long long got = gz_read_bytes(gz, scratch, image_bytes, path, &cut_short, err, err_size);
        if (got < 0) {
            rc = -1;
        } else if ((size_t)got < image_bytes) {
            report_truncated_images(path, count, h, (size_t)i * image_bytes + (size_t)got,
                                    cut_short, err, err_size);
            rc = -1;
        } else if (grow_images(&images, &capacity, (size_t)i + 1, out_bytes) != 0) {
            snprintf(err, err_size, "%s: cannot allocate %d images of %d x %d", path, i + 1,
                     out_h, out_w);
            rc = -1;
        } else {
            place_centered(images + (size_t)i * out_bytes, out_h, out_w, scratch, rows, cols);
        }
    }
    free(scratch);
    if (rc != 0) {
        free(images);
        return -1;
    }
    *d = (Dataset){.images = images, .count = count, .height = out_h, .width = out_w,
                   .channels = 1};
    return 0;
}

int idx_labels_path(const char *images_path, char *out, size_t out_size) {
    const char *slash = strrchr(images_path, '/');
    const char *at = strstr(slash ? slash : images_path, "images-idx3");
    if (!at) return -1;
    int n = snprintf(out, out_size, "%.*slabels-idx1%s", (int)(at - images_path), images_path,
                     at + strlen("images-idx3"));
    return n >= 0 && (size_t)n < out_size ? 0 : -1;
}

static gzFile open_gz(const char *path, char *err, size_t err_size) {
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        snprintf(err, err_size, "%s: cannot open: %s", path,
                 errno ? strerror(errno) : "out of memory");
    return gz;
}

/* The first `count` labels of an IDX1 file whose own count must be `expected`. */
static int read_idx_labels(gzFile gz, const char *path, uint32_t expected, int count,
                           int32_t *labels, int *num_classes, char *err, size_t err_size) {
    unsigned char header[IDX1_HEADER_BYTES];
    int cut_short = 0;
    long long got = gz_read_bytes(gz, header, sizeof header, path, &cut_short, err, err_size);
    if (got < 0) return -1;
    if (got < IDX1_HEADER_BYTES || read_be32(header) != IDX1_UBYTE_MAGIC) {
        snprintf(err, err_size, "%s: not an IDX1 label file (magic 0x%08x)", path,
                 (unsigned)IDX1_UBYTE_MAGIC);
        return -1;
    }
    if (read_be32(header + 4) != expected) {
        snprintf(err, err_size, "%s: %u labels for %u images", path,
                 (unsigned)read_be32(header + 4), (unsigned)expected);
        return -1;
    }
    uint8_t *bytes = xmalloc((size_t)count + 1);
    got = gz_read_bytes(gz, bytes, (size_t)count, path, &cut_short, err, err_size);
    int rc = got < 0 ? -1 : 0;
    if (rc == 0 && got < count) {
        snprintf(err, err_size, "%s: truncated: %lld of %d labels", path, got, count);
        rc = -1;
    }
    *num_classes = 0;
    for (int i = 0; i < count && rc == 0; i++) {
        labels[i] = bytes[i];
        if (bytes[i] + 1 > *num_classes) *num_classes = bytes[i] + 1;
    }
    free(bytes);
    return rc;
}

/* The labels beside an IDX image file, if that file exists. */
static int load_idx_labels(Dataset *d, const char *images_path, uint32_t file_count, char *err,
                           size_t err_size) {
    char path[4096];
    if (idx_labels_path(images_path, path, sizeof path) != 0) return 0;
    if (access(path, F_OK) != 0) return 0;
    gzFile gz = open_gz(path, err, err_size);
    if (!gz) return -1;
    d->labels = xmalloc((size_t)d->count * sizeof(int32_t));
    int rc = read_idx_labels(gz, path, file_count, d->count, d->labels, &d->num_classes, err,
                             err_size);
    gzclose(gz);
    return rc;
}

int dataset_load_idx(Dataset *d, const char *path, int pad_to, int limit, char *err,
                     size_t err_size) {
    *d = (Dataset){0};
    if (require_regular_file(path, err, err_size) != 0) return -1;
    gzFile gz = open_gz(path, err, err_size);
    if (!gz) return -1;
    gzbuffer(gz, GZ_BUFFER_BYTES);
    IdxHeader h;
    int rc = read_idx_header(gz, path, &h, err, err_size);
    if (rc == 0) rc = check_padding(&h, pad_to, path, err, err_size);
    if (rc == 0) {
        int count = limit > 0 && (uint32_t)limit < h.count ? limit : (int)h.count;
        rc = read_idx_images(d, gz, path, &h, count, pad_to, err, err_size);
        /* Only a full read reaches the end; under limit the rest is left unread. */
        if (rc == 0 && (uint32_t)count == h.count &&
            verify_gzip_end(gz, path, err, err_size) != 0) {
            dataset_free(d);
            rc = -1;
        }
    }
    gzclose(gz);
    if (rc == 0 && load_idx_labels(d, path, h.count, err, err_size) != 0) {
        dataset_free(d);
        rc = -1;
    }
    return rc;
}

/* ---- CIFAR-10 ---- */

static int cifar_batch_path(char *out, const char *dir, int test, int index, char *err,
                            size_t err_size) {
    int len = test ? snprintf(out, CIFAR_PATH_MAX, "%s/test_batch.bin", dir)
                   : snprintf(out, CIFAR_PATH_MAX, "%s/data_batch_%d.bin", dir, index + 1);
    if (len >= 0 && len < CIFAR_PATH_MAX) return 0;
    snprintf(err, err_size, "%s: directory path too long", dir);
    return -1;
}

static FILE *open_for_reading(const char *path, char *err, size_t err_size) {
    FILE *f = fopen(path, "rb");
    if (!f) snprintf(err, err_size, "%s: cannot open: %s", path, strerror(errno));
    return f;
}

/* Checks that the file is a non-empty whole number of records and counts them. */
static int cifar_count_records(const char *path, long long *records, char *err,
                               size_t err_size) {
    if (require_regular_file(path, err, err_size) != 0) return -1;
    FILE *f = open_for_reading(path, err, err_size);
    if (!f) return -1;
    long long size = fseeko(f, 0, SEEK_END) == 0 ? (long long)ftello(f) : -1;
    if (size < 0)
        snprintf(err, err_size, "%s: cannot determine the size: %s", path, strerror(errno));
    fclose(f);
    if (size < 0) return -1;
    if (size == 0) {
        snprintf(err, err_size, "%s: empty file (expected %d-byte records)", path,
                 CIFAR_RECORD_BYTES);
        return -1;
    }
    if (size % CIFAR_RECORD_BYTES != 0) {
        snprintf(err, err_size, "%s: size %lld is not a multiple of the %d-byte record", path,
                 size, CIFAR_RECORD_BYTES);
        return -1;
    }
    *records = size / CIFAR_RECORD_BYTES;
    return 0;
}

/* CIFAR stores an image as three 32x32 planes (R, G, B); the engine wants interleaved HWC. */
static void cifar_planes_to_hwc(uint8_t *dst, const uint8_t *planes) {
    for (int pixel = 0; pixel < CIFAR_PLANE_BYTES; pixel++)
        for (int ch = 0; ch < CIFAR_CHANNELS; ch++)
            dst[pixel * CIFAR_CHANNELS + ch] = planes[ch * CIFAR_PLANE_BYTES + pixel];
}

/* Reads the first `records` images of one batch file into dst (HWC) and their labels. */
static int cifar_read_records(const char *path, uint8_t *dst, int32_t *labels, long long records,
                              char *err, size_t err_size) {
    FILE *f = open_for_reading(path, err, err_size);
    if (!f) return -1;
    uint8_t record[CIFAR_RECORD_BYTES];
    long long done = 0;
    while (done < records && fread(record, CIFAR_RECORD_BYTES, 1, f) == 1) {
        if (record[0] >= CIFAR_CLASSES) {
            fclose(f);
            snprintf(err, err_size, "%s: record %lld has label %d, outside [0, %d)", path, done,
                     record[0], CIFAR_CLASSES);
            return -1;
        }
        labels[done] = record[0];
        cifar_planes_to_hwc(dst + (size_t)done * CIFAR_IMAGE_BYTES, record + 1);
        done++;
    }
    fclose(f);
    if (done == records) return 0;
    /* The size was checked moments ago, so this means the file changed or I/O failed. */
    snprintf(err, err_size, "%s: read %lld of %lld records", path, done, records);
    return -1;
}

int dataset_load_cifar10(Dataset *d, const char *dir, int test, int limit, char *err,
                         size_t err_size) {
    *d = (Dataset){0};
    int n_files = test ? 1 : CIFAR_TRAIN_BATCHES;
    char paths[CIFAR_TRAIN_BATCHES][CIFAR_PATH_MAX];
    long long records[CIFAR_TRAIN_BATCHES], total = 0;
    /* Validate every file before reading any, so a bad batch fails fast even under limit. */
    for (int i = 0; i < n_files; i++) {
        if (cifar_batch_path(paths[i], dir, test, i, err, err_size) != 0 ||
            cifar_count_records(paths[i], &records[i], err, err_size) != 0)
            return -1;
        total += records[i];
    }
    long long count = limit > 0 && limit < total ? limit : total;
    if (count > DATASET_MAX_IMAGES) {
        snprintf(err, err_size, "%s: %lld images exceed the %d-image limit", dir, count,
                 DATASET_MAX_IMAGES);
        return -1;
    }
    uint8_t *images = malloc((size_t)count * CIFAR_IMAGE_BYTES);
    int32_t *labels = malloc((size_t)count * sizeof(int32_t));
    if (!images || !labels) {
        free(images);
        free(labels);
        snprintf(err, err_size, "%s: cannot allocate %lld images", dir, count);
        return -1;
    }
    long long done = 0;
    for (int i = 0; i < n_files && done < count; i++) {
        long long take = records[i] < count - done ? records[i] : count - done;
        if (cifar_read_records(paths[i], images + (size_t)done * CIFAR_IMAGE_BYTES,
                               labels + done, take, err, err_size) != 0) {
            free(images);
            free(labels);
            return -1;
        }
        done += take;
    }
    *d = (Dataset){.images = images, .labels = labels, .num_classes = CIFAR_CLASSES,
                   .count = (int)count, .height = CIFAR_SIDE, .width = CIFAR_SIDE,
                   .channels = CIFAR_CHANNELS};
    return 0;
}

/* ---- float data (latents) ---- */

static int latent_labels(Dataset *d, const StTensor *t, const char *path, int64_t n_file,
                         char *err, size_t err_size) {
    if ((t->dtype != ST_I32 && t->dtype != ST_I64) || t->ndim != 1 || t->shape[0] != n_file) {
        snprintf(err, err_size, "%s: tensor 'labels' must be int32 or int64 of shape (%lld)",
                 path, (long long)n_file);
        return -1;
    }
    d->labels = xmalloc((size_t)d->count * sizeof(int32_t));
    for (int i = 0; i < d->count; i++) {
        int64_t v;   /* the file's data may be unaligned */
        if (t->dtype == ST_I32) {
            int32_t v32;
            memcpy(&v32, (const char *)t->data + (size_t)i * 4, 4);
            v = v32;
        } else {
            memcpy(&v, (const char *)t->data + (size_t)i * 8, 8);
        }
        if (v < 0 || v > INT32_MAX - 1) {
            snprintf(err, err_size, "%s: label %lld of sample %d is negative or too large", path,
                     (long long)v, i);
            return -1;
        }
        d->labels[i] = (int32_t)v;
        if (v + 1 > d->num_classes) d->num_classes = (int)(v + 1);
    }
    return 0;
}

int dataset_load_latents(Dataset *d, const char *path, int limit, char *err, size_t err_size) {
    *d = (Dataset){0};
    StFile f;
    if (st_read(&f, path, err, err_size) != 0) return -1;
    const StTensor *x = st_find(&f, "latents"), *labels = st_find(&f, "labels");
    int rc = 0;
    if (!x || x->dtype != ST_F32 || x->ndim != 4) {
        snprintf(err, err_size, "%s: needs a float32 tensor 'latents' of shape (N, H, W, C)", path);
        rc = -1;
    } else if (x->shape[0] < 1 || x->shape[0] > DATASET_MAX_IMAGES || x->shape[1] < 1 ||
               x->shape[2] < 1 || x->shape[3] < 1) {
        snprintf(err, err_size, "%s: 'latents' has an empty or too large dimension", path);
        rc = -1;
    }
    if (rc == 0) {
        int64_t n_file = x->shape[0];
        int count = limit > 0 && limit < n_file ? limit : (int)n_file;
        size_t per = (size_t)x->shape[1] * x->shape[2] * x->shape[3];
        *d = (Dataset){.count = count, .height = (int)x->shape[1], .width = (int)x->shape[2],
                       .channels = (int)x->shape[3]};
        d->values = xmalloc((size_t)count * per * sizeof(float));
        memcpy(d->values, x->data, (size_t)count * per * sizeof(float));
        if (labels) rc = latent_labels(d, labels, path, n_file, err, err_size);
        if (rc != 0) dataset_free(d);
    }
    st_free(&f);
    return rc;
}

int dataset_load_configured(Dataset *d, const Config *c, const char *path, int test, int limit,
                            char *err, size_t err_size) {
    switch ((DatasetKind)c->dataset) {
    case DATASET_CIFAR10: return dataset_load_cifar10(d, path, test, limit, err, err_size);
    case DATASET_LATENTS: return dataset_load_latents(d, path, limit, err, err_size);
    case DATASET_FOLDER:
        return dataset_load_folder(d, path, c->image_size, c->in_channels, limit,
                                   c->skip_bad_images, err, err_size);
    default: return dataset_load_idx(d, path, c->image_size, limit, err, err_size);
    }
}
