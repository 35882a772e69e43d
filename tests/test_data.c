/* Tests of data loading (IDX, CIFAR-10) and image output (PNG grid, npz, float -> uint8).
 * Synthetic inputs are written into a mkdtemp directory under /tmp, removed at the end;
 * a slice of the real Fashion-MNIST training file is read when it is installed. Output
 * files are read back independently: PNGs with libpng's simplified API, npz files with
 * libzip and with numpy itself. */
#include <ftw.h>
#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zip.h>
#include <zlib.h>

#include "data.h"
#include "image_io.h"
#include "testing.h"

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

static char tmp_dir[] = "/tmp/ddpm_test_data_XXXXXX";

static const char *tmp_path(const char *name) { return test_path(tmp_dir, name); }

static void write_bytes(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

static int contains(const char *haystack, const char *needle) {
    return strstr(haystack, needle) != NULL;
}

static int dataset_is_empty(const Dataset *d) {
    return d->images == NULL && d->labels == NULL && d->count == 0 && d->height == 0 &&
           d->width == 0;
}

/* ---- Fashion-MNIST slice ---- */

/* Reads the header and the first n images of a gzipped IDX file without the loader. */
static uint8_t *read_raw_idx(const char *path, int n, int image_bytes) {
    gzFile gz = gzopen(path, "rb");
    unsigned char header[16];
    uint8_t *pixels = malloc((size_t)n * image_bytes);
    int ok = gz && gzread(gz, header, 16) == 16 &&
             gzread(gz, pixels, (unsigned)(n * image_bytes)) == n * image_bytes;
    if (gz) gzclose(gz);
    if (!ok) {
        free(pixels);
        return NULL;
    }
    return pixels;
}

static void test_fashion_mnist(void) {
    const char *path = FASHION_DIR "/train-images-idx3-ubyte.gz";
    /* dataset-fashion-mnist is a test dependency (tools/debian-packages.txt): its absence fails */
    CHECK(access(path, R_OK) == 0, "%s is missing: install dataset-fashion-mnist", path);
    if (access(path, R_OK) != 0) return;
    enum { N = 100, SIDE = 28, PAD = 32, OFFSET = (PAD - SIDE) / 2 };
    Dataset d;
    char err[512] = "";
    CHECK(dataset_load_idx(&d, path, PAD, N, err, sizeof err) == 0, "load: %s", err);
    CHECK(d.count == N && d.height == PAD && d.width == PAD && d.channels == 1,
          "shape %d x %d x %d x %d", d.count, d.height, d.width, d.channels);
    uint8_t *raw = read_raw_idx(path, N, SIDE * SIDE);
    CHECK(raw != NULL, "independent gzread of %s failed", path);
    if (!raw || d.count != N || d.height != PAD || d.width != PAD) {
        free(raw);
        dataset_free(&d);
        return;
    }
    int border_nonzero = 0, interior_mismatch = 0;
    double interior_sum = 0;
    for (int i = 0; i < N; i++)
        for (int y = 0; y < PAD; y++)
            for (int x = 0; x < PAD; x++) {
                uint8_t got = d.images[((size_t)i * PAD + y) * PAD + x];
                int inside = y >= OFFSET && y < OFFSET + SIDE && x >= OFFSET && x < OFFSET + SIDE;
                if (!inside) {
                    border_nonzero += got != 0;
                    continue;
                }
                size_t raw_index = ((size_t)i * SIDE + y - OFFSET) * SIDE + x - OFFSET;
                interior_mismatch += got != raw[raw_index];
                interior_sum += got;
            }
    double mean = interior_sum / ((double)N * SIDE * SIDE);
    CHECK(border_nonzero == 0, "%d padding pixels are nonzero", border_nonzero);
    CHECK(interior_mismatch == 0, "%d interior pixels differ from the raw bytes",
          interior_mismatch);
    CHECK(memcmp(&d.images[OFFSET * PAD + OFFSET], raw, SIDE) == 0, "first row of image 0");
    CHECK(mean > 50 && mean < 100, "interior mean %.2f is implausible for Fashion-MNIST", mean);
    free(raw);
    dataset_free(&d);
    CHECK(dataset_is_empty(&d), "dataset_free leaves the struct empty");

    const char *test_path = FASHION_DIR "/t10k-images-idx3-ubyte.gz";
    CHECK(dataset_load_idx(&d, test_path, 0, 5, err, sizeof err) == 0, "t10k: %s", err);
    CHECK(d.count == 5 && d.height == SIDE && d.width == SIDE, "t10k unpadded shape %d x %d x %d",
          d.count, d.height, d.width);
    dataset_free(&d);
}

/* ---- synthetic IDX ---- */

enum { IDX_N = 3, IDX_ROWS = 5, IDX_COLS = 4, IDX_IMAGE = IDX_ROWS * IDX_COLS };

static uint8_t idx_pixel(int i, int y, int x) { return (uint8_t)(i * 37 + y * 5 + x * 3 + 1); }

static void put_be32(unsigned char *out, uint32_t v) {
    out[0] = (unsigned char)(v >> 24);
    out[1] = (unsigned char)(v >> 16);
    out[2] = (unsigned char)(v >> 8);
    out[3] = (unsigned char)v;
}

/* An IDX file: the 16-byte header with the given fields, then the first image_bytes bytes
 * of the synthetic images (fewer than declared makes a truncated file). */
static void write_idx(const char *path, int gzip, uint32_t magic, uint32_t count, uint32_t rows,
                      uint32_t cols, size_t image_bytes) {
    unsigned char bytes[16 + IDX_N * IDX_IMAGE];
    put_be32(bytes, magic);
    put_be32(bytes + 4, count);
    put_be32(bytes + 8, rows);
    put_be32(bytes + 12, cols);
    for (int i = 0; i < IDX_N; i++)
        for (int p = 0; p < IDX_IMAGE; p++)
            bytes[16 + i * IDX_IMAGE + p] = idx_pixel(i, p / IDX_COLS, p % IDX_COLS);
    size_t size = 16 + image_bytes;
    if (!gzip) {
        write_bytes(path, bytes, size);
        return;
    }
    gzFile gz = gzopen(path, "wb");
    if (!gz || gzwrite(gz, bytes, (unsigned)size) != (int)size || gzclose(gz) != Z_OK) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

static void write_good_idx(const char *path, int gzip) {
    write_idx(path, gzip, 0x803, IDX_N, IDX_ROWS, IDX_COLS, IDX_N * IDX_IMAGE);
}

/* Loads path with pad_to = PAD_TO and checks the padded images pixel by pixel. */
static void check_idx_round_trip(const char *path, int pad_to) {
    Dataset d;
    char err[512] = "";
    CHECK(dataset_load_idx(&d, path, pad_to, 0, err, sizeof err) == 0, "%s: %s", path, err);
    int out_h = pad_to ? pad_to : IDX_ROWS, out_w = pad_to ? pad_to : IDX_COLS;
    CHECK(d.count == IDX_N && d.height == out_h && d.width == out_w && d.channels == 1,
          "%s pad %d: shape %d x %d x %d x %d", path, pad_to, d.count, d.height, d.width,
          d.channels);
    if (d.count != IDX_N || d.height != out_h || d.width != out_w) {
        dataset_free(&d);
        return;
    }
    int top = (out_h - IDX_ROWS) / 2, left = (out_w - IDX_COLS) / 2, mismatches = 0;
    for (int i = 0; i < IDX_N; i++)
        for (int y = 0; y < out_h; y++)
            for (int x = 0; x < out_w; x++) {
                int sy = y - top, sx = x - left;
                int inside = sy >= 0 && sy < IDX_ROWS && sx >= 0 && sx < IDX_COLS;
                uint8_t expected = inside ? idx_pixel(i, sy, sx) : 0;
                mismatches += d.images[((size_t)i * out_h + y) * out_w + x] != expected;
            }
    CHECK(mismatches == 0, "%s pad %d: %d pixels differ", path, pad_to, mismatches);
    dataset_free(&d);
}

/* Expects loading to fail with an error naming the file and containing phrase. */
static void expect_idx_error(const char *path, int pad_to, int limit, const char *phrase) {
    Dataset d = {.count = 99};
    char err[512] = "";
    int rc = dataset_load_idx(&d, path, pad_to, limit, err, sizeof err);
    CHECK(rc == -1, "%s: expected failure with \"%s\"", path, phrase);
    CHECK(contains(err, path) && contains(err, phrase), "error \"%s\" lacks \"%s\"", err, phrase);
    CHECK(dataset_is_empty(&d), "failed load of %s left data in the Dataset", path);
}

/* A gzip member header (deflate, no flags) followed by bytes that are not deflate data:
 * 0xff starts a final block of the reserved type 3. */
static void write_corrupt_gzip(const char *path) {
    unsigned char bytes[10 + 64] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    memset(bytes + 10, 0xff, 64);
    write_bytes(path, bytes, sizeof bytes);
}

/* A valid gzip file with its last cut_bytes removed (the trailer is the last 8). */
static void write_cut_gzip(const char *path, long cut_bytes) {
    write_good_idx(path, 1);
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    if (truncate(path, size - cut_bytes) != 0) exit(2);
}

/* A valid gzip file whose trailer CRC no longer matches: the data decompresses fine. */
static void write_bad_crc_gzip(const char *path) {
    write_good_idx(path, 1);
    FILE *f = fopen(path, "r+b");
    fseek(f, -8, SEEK_END); /* the trailer: CRC-32, then the uncompressed size */
    int byte = fgetc(f);
    fseek(f, -8, SEEK_END);
    fputc(byte ^ 0xff, f);
    fclose(f);
}

static void test_idx_synthetic(void) {
    const char *raw = tmp_path("images.idx"), *gz = tmp_path("images.idx.gz");
    write_good_idx(raw, 0);
    write_good_idx(gz, 1);
    for (int gzip = 0; gzip <= 1; gzip++) {
        const char *path = gzip ? gz : raw;
        check_idx_round_trip(path, 0);
        check_idx_round_trip(path, 8); /* 5x4 -> 8x8: 1 row on top, 2 columns on the left */
        check_idx_round_trip(path, 5); /* width only: the odd extra column goes right */
    }
    Dataset d;
    char err[512] = "";
    CHECK(dataset_load_idx(&d, gz, 0, 2, err, sizeof err) == 0 && d.count == 2, "limit 2: %s", err);
    dataset_free(&d);
    CHECK(dataset_load_idx(&d, gz, 0, 10, err, sizeof err) == 0 && d.count == IDX_N,
          "limit above the count keeps all: %s", err);
    dataset_free(&d);

    const char *path = tmp_path("bad.idx");
    write_idx(path, 0, 0x801, IDX_N, IDX_ROWS, IDX_COLS, IDX_N * IDX_IMAGE);
    expect_idx_error(path, 0, 0, "wrong magic 0x00000801, expected 0x00000803");
    write_bytes(path, "\0\0\x08\x03\0\0\0\x03\0\0", 10);
    expect_idx_error(path, 0, 0, "truncated header: 10 of 16 bytes");
    write_idx(path, 0, 0x803, IDX_N, 0, IDX_COLS, IDX_N * IDX_IMAGE);
    expect_idx_error(path, 0, 0, "invalid dimensions");
    write_idx(path, 0, 0x803, IDX_N, 5000, IDX_COLS, IDX_N * IDX_IMAGE);
    expect_idx_error(path, 0, 0, "invalid dimensions");
    write_idx(path, 0, 0x803, IDX_N, IDX_ROWS, IDX_COLS, 50);
    expect_idx_error(path, 0, 0, "need 60 bytes after the header, found 50");
    /* The first two images (40 bytes) are all there, and only those are read. */
    CHECK(dataset_load_idx(&d, path, 0, 2, err, sizeof err) == 0 && d.count == 2,
          "limit 2 of a truncated file: %s", err);
    dataset_free(&d);
    write_idx(path, 1, 0x803, IDX_N, IDX_ROWS, IDX_COLS, 50);
    expect_idx_error(path, 0, 0, "need 60 bytes after the header, found 50");
    write_cut_gzip(path, 20); /* inside the deflate data */
    expect_idx_error(path, 0, 0, "(gzip stream ends early)");
    write_cut_gzip(path, 8); /* every image byte is there, the trailer is not */
    expect_idx_error(path, 0, 0, "gzip stream ends early, after the last image");
    write_corrupt_gzip(path);
    expect_idx_error(path, 0, 0, "corrupt gzip stream: invalid block type");
    write_bad_crc_gzip(path);
    expect_idx_error(path, 0, 0, "corrupt gzip stream: incorrect data check");
    expect_idx_error(tmp_path("missing.idx"), 0, 0, "cannot open: No such file");
    expect_idx_error(raw, 4, 0, "cannot pad 5 x 4 images to 4 x 4: smaller than the image");
}

/* ---- labels beside IDX images ---- */

static void write_labels(const char *path, uint32_t magic, uint32_t count, int n_bytes) {
    unsigned char bytes[8 + 16];
    put_be32(bytes, magic);
    put_be32(bytes + 4, count);
    for (int i = 0; i < n_bytes; i++) bytes[8 + i] = (unsigned char)(7 - i);
    write_bytes(path, bytes, 8 + (size_t)n_bytes);
}

static void expect_label_error(const char *images, const char *phrase) {
    Dataset d;
    char err[512] = "", labels[512];
    CHECK(idx_labels_path(images, labels, sizeof labels) == 0, "labels path of %s", images);
    CHECK(dataset_load_idx(&d, images, 0, 0, err, sizeof err) != 0, "bad labels accepted");
    CHECK(contains(err, labels) && contains(err, phrase), "error \"%s\" lacks %s / \"%s\"", err,
          labels, phrase);
    CHECK(dataset_is_empty(&d), "a failed load leaves the dataset empty");
}

/* The real Fashion-MNIST labels, against an independent read; synthetic bad label files. */
static void test_labels(void) {
    enum { N = 200 };
    const char *path = FASHION_DIR "/train-images-idx3-ubyte.gz";
    Dataset d;
    char err[512] = "";
    CHECK(dataset_load_idx(&d, path, 32, N, err, sizeof err) == 0, "load: %s", err);
    uint8_t *raw = NULL;
    gzFile gz = gzopen(FASHION_DIR "/train-labels-idx1-ubyte.gz", "rb");
    unsigned char header[8];
    if (gz && gzread(gz, header, 8) == 8) {
        raw = malloc(N);
        if (gzread(gz, raw, N) != N) free(raw), raw = NULL;
    }
    if (gz) gzclose(gz);
    CHECK(raw && d.labels && d.num_classes == 10, "labels %s, %d classes",
          d.labels ? "present" : "missing", d.num_classes);
    int mismatch = 0;
    for (int i = 0; i < N && raw && d.labels; i++) mismatch += d.labels[i] != raw[i];
    CHECK(mismatch == 0, "%d of %d labels differ from the label file", mismatch, N);
    free(raw);
    dataset_free(&d);

    char name[4][64] = {"a-images-idx3-ubyte", "a-labels-idx1-ubyte", "plain.idx", "x"};
    write_good_idx(tmp_path(name[0]), 0);
    write_labels(tmp_path(name[1]), 0x801, IDX_N, IDX_N);
    CHECK(dataset_load_idx(&d, tmp_path(name[0]), 0, 0, err, sizeof err) == 0, "%s", err);
    CHECK(d.labels && d.labels[0] == 7 && d.labels[2] == 5 && d.num_classes == 8,
          "synthetic labels read");
    dataset_free(&d);
    write_labels(tmp_path(name[1]), 0x801, IDX_N + 1, IDX_N + 1);
    expect_label_error(tmp_path(name[0]), "4 labels for 3 images");
    write_labels(tmp_path(name[1]), 0x803, IDX_N, IDX_N);
    expect_label_error(tmp_path(name[0]), "not an IDX1 label file");
    write_labels(tmp_path(name[1]), 0x801, IDX_N, IDX_N - 1);
    expect_label_error(tmp_path(name[0]), "truncated: 2 of 3 labels");
    write_good_idx(tmp_path(name[2]), 0);   /* no labels file beside it: no labels */
    CHECK(dataset_load_idx(&d, tmp_path(name[2]), 0, 0, err, sizeof err) == 0 && !d.labels &&
              d.num_classes == 0, "images without a labels file");
    dataset_free(&d);
}

/* ---- synthetic CIFAR-10 ---- */

enum { CIFAR_PLANE = 1024, CIFAR_RECORD = 3073 };

static uint8_t cifar_value(int image, int ch, int pixel) {
    return (uint8_t)(image * 31 + ch * 80 + pixel * 7);
}

/* Writes records for global image indices first .. first + n - 1 (label = index % 10). */
static void write_cifar_file(const char *name, int first, int n, int extra_bytes) {
    size_t size = (size_t)n * CIFAR_RECORD + (size_t)extra_bytes;
    unsigned char *bytes = calloc(1, size + 1);
    for (int r = 0; r < n; r++) {
        unsigned char *record = bytes + (size_t)r * CIFAR_RECORD;
        record[0] = (unsigned char)((first + r) % 10);
        for (int ch = 0; ch < 3; ch++)
            for (int p = 0; p < CIFAR_PLANE; p++)
                record[1 + ch * CIFAR_PLANE + p] = cifar_value(first + r, ch, p);
    }
    write_bytes(tmp_path(name), bytes, size);
    free(bytes);
}

static const int cifar_batch_sizes[5] = {2, 1, 3, 1, 2};

static void write_cifar_batches(void) {
    char name[64];
    for (int b = 0, first = 0; b < 5; first += cifar_batch_sizes[b], b++) {
        snprintf(name, sizeof name, "data_batch_%d.bin", b + 1);
        write_cifar_file(name, first, cifar_batch_sizes[b], 0);
    }
    write_cifar_file("test_batch.bin", 100, 1, 0);
}

/* Checks that d holds images first .. first + count - 1 in HWC order. */
static void check_cifar_images(const Dataset *d, int first, int count) {
    CHECK(d->count == count && d->height == 32 && d->width == 32 && d->channels == 3,
          "CIFAR shape %d x %d x %d x %d, expected %d x 32 x 32 x 3", d->count, d->height,
          d->width, d->channels, count);
    if (d->count != count) return;
    int mismatches = 0;
    for (int i = 0; i < count; i++)
        for (int p = 0; p < CIFAR_PLANE; p++)
            for (int ch = 0; ch < 3; ch++)
                mismatches += d->images[((size_t)i * CIFAR_PLANE + p) * 3 + ch] !=
                              cifar_value(first + i, ch, p);
    CHECK(mismatches == 0, "%d CIFAR values differ from the NHWC conversion", mismatches);
    int wrong_labels = 0;
    for (int i = 0; i < count && d->labels; i++) wrong_labels += d->labels[i] != (first + i) % 10;
    CHECK(d->labels && d->num_classes == 10 && wrong_labels == 0,
          "CIFAR labels: %s, %d classes, %d wrong", d->labels ? "present" : "missing",
          d->num_classes, wrong_labels);
}

static void expect_cifar_error(int test, const char *file, const char *phrase) {
    Dataset d = {.count = 99};
    char err[512] = "";
    int rc = dataset_load_cifar10(&d, tmp_dir, test, 0, err, sizeof err);
    CHECK(rc == -1, "expected a CIFAR failure naming %s", file);
    CHECK(contains(err, tmp_path(file)) && contains(err, phrase), "error \"%s\" lacks %s / \"%s\"",
          err, file, phrase);
    CHECK(dataset_is_empty(&d), "failed CIFAR load left data in the Dataset");
}

static void test_cifar(void) {
    write_cifar_batches();
    Dataset d;
    char err[512] = "";
    CHECK(dataset_load_cifar10(&d, tmp_dir, 0, 0, err, sizeof err) == 0, "train: %s", err);
    check_cifar_images(&d, 0, 9);
    dataset_free(&d);
    /* 4 images: both of batch 1, the one of batch 2, the first of batch 3. */
    CHECK(dataset_load_cifar10(&d, tmp_dir, 0, 4, err, sizeof err) == 0, "limit 4: %s", err);
    check_cifar_images(&d, 0, 4);
    dataset_free(&d);
    CHECK(dataset_load_cifar10(&d, tmp_dir, 1, 0, err, sizeof err) == 0, "test batch: %s", err);
    check_cifar_images(&d, 100, 1);
    dataset_free(&d);
    unsigned char bad_label[CIFAR_RECORD] = {11};
    write_bytes(tmp_path("test_batch.bin"), bad_label, sizeof bad_label);
    expect_cifar_error(1, "test_batch.bin", "record 0 has label 11, outside [0, 10)");

    write_cifar_file("data_batch_2.bin", 2, 1, 1);
    expect_cifar_error(0, "data_batch_2.bin",
                       "size 3074 is not a multiple of the 3073-byte record");
    write_cifar_file("data_batch_2.bin", 2, 0, 0);
    expect_cifar_error(0, "data_batch_2.bin", "empty file");
    write_cifar_file("data_batch_2.bin", 2, 1, 0);
    unlink(tmp_path("data_batch_3.bin"));
    expect_cifar_error(0, "data_batch_3.bin", "cannot open: No such file");
    unlink(tmp_path("test_batch.bin"));
    expect_cifar_error(1, "test_batch.bin", "cannot open");
}

/* ---- PNG grid ---- */

enum { TILE = 4, GRID_N = 5 };

static uint8_t tile_value(int i, int y, int x, int ch) {
    return (uint8_t)(10 + i * 40 + y * 8 + x * 2 + ch);
}

static uint8_t *make_tiles(int n, int c) {
    uint8_t *images = malloc((size_t)n * TILE * TILE * c);
    for (int i = 0; i < n; i++)
        for (int y = 0; y < TILE; y++)
            for (int x = 0; x < TILE; x++)
                for (int ch = 0; ch < c; ch++)
                    images[((i * TILE + y) * TILE + x) * c + ch] = tile_value(i, y, x, ch);
    return images;
}

/* The grid this project defines: cols = ceil(sqrt(n)), a 2-pixel gap of zeros around and
 * between tiles, so tile i's top-left corner is at (2 + row * (TILE + 2), 2 + col * (TILE + 2)). */
static uint8_t expected_grid_value(int n, int cols, int y, int x, int ch) {
    for (int i = 0; i < n; i++) {
        int top = 2 + (i / cols) * (TILE + 2), left = 2 + (i % cols) * (TILE + 2);
        if (y >= top && y < top + TILE && x >= left && x < left + TILE)
            return tile_value(i, y - top, x - left, ch);
    }
    return 0;
}

/* Reads a PNG back with libpng's simplified API; returns the pixels as c channels. */
static uint8_t *read_png(const char *path, int c, png_image *image) {
    memset(image, 0, sizeof *image);
    image->version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(image, path)) return NULL;
    image->format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    uint8_t *pixels = malloc(PNG_IMAGE_SIZE(*image));
    if (!png_image_finish_read(image, NULL, pixels, 0, NULL)) {
        free(pixels);
        return NULL;
    }
    return pixels;
}

static void check_png_grid(int n, int c, int cols, int rows) {
    const char *path = tmp_path(c == 3 ? "grid_rgb.png" : "grid_gray.png");
    uint8_t *tiles = make_tiles(n, c);
    char err[512] = "";
    CHECK(write_png_grid(path, tiles, n, TILE, TILE, c, err, sizeof err) == 0, "png: %s", err);
    free(tiles);
    png_image image;
    uint8_t *pixels = read_png(path, c, &image);
    CHECK(pixels != NULL, "%s: cannot read back: %s", path, image.message);
    if (!pixels) return;
    int width = cols * TILE + (cols + 1) * 2, height = rows * TILE + (rows + 1) * 2;
    CHECK((int)image.width == width && (int)image.height == height,
          "n %d c %d: %u x %u, expected %d x %d", n, c, image.width, image.height, width, height);
    int mismatches = 0;
    for (int y = 0; y < height && (int)image.width == width; y++)
        for (int x = 0; x < width; x++)
            for (int ch = 0; ch < c; ch++)
                mismatches += pixels[((size_t)y * width + x) * c + ch] !=
                              expected_grid_value(n, cols, y, x, ch);
    CHECK(mismatches == 0, "n %d c %d: %d pixels differ from the expected grid", n, c, mismatches);
    free(pixels);
}

static void test_png(void) {
    check_png_grid(GRID_N, 3, 3, 2); /* 3 x 2 grid: 20 x 14 pixels */
    check_png_grid(GRID_N, 1, 3, 2);
    check_png_grid(1, 3, 1, 1);
    check_png_grid(4, 1, 2, 2);

    /* Spot checks stated outright for the RGB grid: corner, gap, tile 4's first pixel. */
    png_image image;
    uint8_t *rgb = read_png(tmp_path("grid_rgb.png"), 3, &image);
    if (rgb && image.width == 20 && image.height == 14) {
        CHECK(rgb[0] == 0 && rgb[1] == 0 && rgb[2] == 0, "top-left border pixel is not dark");
        CHECK(rgb[(2 * 20 + 6) * 3] == 0, "gap pixel between tiles 0 and 1 is not dark");
        CHECK(rgb[(8 * 20 + 8) * 3 + 1] == tile_value(4, 0, 0, 1), "tile 4 top-left green value");
    }
    free(rgb);
    png_image gray_info = {.version = PNG_IMAGE_VERSION};
    CHECK(png_image_begin_read_from_file(&gray_info, tmp_path("grid_gray.png")) &&
              !(gray_info.format & PNG_FORMAT_FLAG_COLOR),
          "the c = 1 grid is not stored as grayscale");
    png_image_free(&gray_info);

    const char *bad = tmp_path("bad.png");
    uint8_t tiles[2 * 4 * 4 * 2] = {0};
    char err[512] = "";
    CHECK(write_png_grid(bad, tiles, 2, 4, 4, 2, err, sizeof err) == -1 && contains(err, bad) &&
              contains(err, "1 or 3 channels"),
          "c = 2 must be refused: \"%s\"", err);
    CHECK(access(bad, F_OK) != 0, "a refused grid left a file behind");
}

/* Nearest-neighbour enlargement: pixel (y, x) of the result is pixel (y / k, x / k). */
static void test_upscale(void) {
    enum { K = 3, N = 2 };
    for (int c = 1; c <= 3; c += 2) {
        uint8_t *tiles = make_tiles(N, c);
        uint8_t *big = images_upscale_nearest(tiles, N, TILE, TILE, c, K);
        int mismatches = 0;
        for (int i = 0; i < N; i++)
            for (int y = 0; y < TILE * K; y++)
                for (int x = 0; x < TILE * K; x++)
                    for (int ch = 0; ch < c; ch++)
                        mismatches += big[(((size_t)i * TILE * K + y) * TILE * K + x) * c + ch] !=
                                      tile_value(i, y / K, x / K, ch);
        CHECK(mismatches == 0, "c %d: %d enlarged pixels differ from their source", c, mismatches);
        free(big);
        free(tiles);
    }
}

/* ---- npz ---- */

static uint8_t *make_ramp(size_t count) {
    uint8_t *bytes = malloc(count);
    for (size_t i = 0; i < count; i++) bytes[i] = (uint8_t)(i * 7);
    return bytes;
}

/* Debian's python3 with python3-numpy; DDPM_TEST_PYTHON names another (a GPU machine's). */
static const char *test_python(void) {
    const char *python = getenv("DDPM_TEST_PYTHON");
    return python && *python ? python : "/usr/bin/python3";
}

static int python_has_numpy(void) {
    char command[512];
    snprintf(command, sizeof command, "%s -c 'import numpy' >/dev/null 2>&1", test_python());
    return system(command) == 0;
}

/* numpy.load must see uint8 of the given shape holding the ramp i * 7 mod 256. */
static void check_npz_with_numpy(const char *path, int n, int h, int w, int c) {
    char command[1024];
    snprintf(command, sizeof command,
             "%s -c \"import numpy, sys; a = numpy.load(sys.argv[1])['arr_0']; "
                    "ok = a.dtype == numpy.uint8 and a.shape == (%d, %d, %d, %d) and "
                    "(a.reshape(-1) == numpy.arange(a.size) * 7 %% 256).all(); "
                    "sys.exit(0 if ok else 1)\" '%s'",
             test_python(), n, h, w, c, path);
    CHECK(system(command) == 0, "numpy.load of %s: wrong dtype, shape or values", path);
}

/* Opens the archive with libzip and checks the .npy entry byte by byte. */
static void check_npz_with_libzip(const char *path, const uint8_t *images, size_t count,
                                  const char *expected_dict) {
    int code = 0;
    zip_t *archive = zip_open(path, ZIP_RDONLY, &code);
    CHECK(archive != NULL, "zip_open %s: error %d", path, code);
    if (!archive) return;
    zip_stat_t st;
    CHECK(zip_get_num_entries(archive, 0) == 1, "one entry expected");
    CHECK(zip_stat_index(archive, 0, 0, &st) == 0 && strcmp(st.name, "arr_0.npy") == 0,
          "entry is not arr_0.npy");
    CHECK(st.comp_method == ZIP_CM_STORE, "entry compression %d, expected stored", st.comp_method);
    unsigned char *npy = calloc(1, st.size + 1);
    zip_file_t *file = zip_fopen_index(archive, 0, 0);
    CHECK(file && zip_fread(file, npy, st.size) == (zip_int64_t)st.size, "cannot read arr_0.npy");
    if (file) zip_fclose(file);
    zip_close(archive);
    size_t header_len = npy[8] | (size_t)npy[9] << 8, data_start = 10 + header_len;
    CHECK(memcmp(npy, "\x93NUMPY\x01\x00", 8) == 0, "npy magic / version");
    CHECK(data_start % 64 == 0 && npy[data_start - 1] == '\n', "preamble of %zu bytes", data_start);
    CHECK(memcmp(npy + 10, expected_dict, strlen(expected_dict)) == 0, "header dict: %.*s",
          (int)header_len, (const char *)npy + 10);
    CHECK(st.size == data_start + count && memcmp(npy + data_start, images, count) == 0,
          "npy data: %llu bytes", (unsigned long long)st.size);
    free(npy);
}

static void test_npz(void) {
    const char *path = tmp_path("samples.npz"), *rgb_path = tmp_path("samples_rgb.npz");
    uint8_t *gray = make_ramp(3 * 4 * 4), *rgb = make_ramp(2 * 3 * 5 * 3);
    char err[512] = "";
    CHECK(write_npz_u8(path, gray, 3, 4, 4, 1, err, sizeof err) == 0, "npz: %s", err);
    CHECK(write_npz_u8(rgb_path, rgb, 2, 3, 5, 3, err, sizeof err) == 0, "npz rgb: %s", err);
    check_npz_with_libzip(path, gray, 3 * 4 * 4,
                          "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 4, 4, 1), }");
    /* python3-numpy is a test dependency (tools/debian-packages.txt): its absence fails */
    CHECK(python_has_numpy(), "%s has no numpy: install python3-numpy", test_python());
    check_npz_with_numpy(path, 3, 4, 4, 1);
    check_npz_with_numpy(rgb_path, 2, 3, 5, 3);
    const char *bad = tmp_path("bad.npz");
    CHECK(write_npz_u8(bad, gray, 0, 4, 4, 1, err, sizeof err) == -1 && contains(err, bad) &&
              contains(err, "invalid image shape"),
          "n = 0 must be refused: \"%s\"", err);
    CHECK(access(bad, F_OK) != 0, "a refused npz left a file behind");
    free(gray);
    free(rgb);
}

/* ---- float -> uint8 ---- */

static void test_images_to_u8(void) {
    const float in[] = {-1.0f, 1.0f, 0.0f, -2.0f, 3.0f, NAN, INFINITY, -INFINITY,
                        -1.0f + 1.0f / 127.5f, 0.999f, -0.999f};
    const uint8_t expected[] = {0, 255, 128, 0, 255, 0, 255, 0, 1, 255, 0};
    uint8_t out[sizeof expected];
    images_to_u8(out, in, sizeof expected);
    for (size_t i = 0; i < sizeof expected; i++)
        CHECK(out[i] == expected[i], "images_to_u8(%g) = %d, expected %d", (double)in[i], out[i],
              expected[i]);
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    return remove(path);
}

int main(void) {
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_fashion_mnist();
    test_idx_synthetic();
    test_labels();
    test_cifar();
    test_png();
    test_upscale();
    test_npz();
    test_images_to_u8();
    nftw(tmp_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    return test_summary("data");
}
