/* Tests of image-folder datasets (dataset = "folder"): a generated folder of PNGs (written
 * with libpng's simplified API) and JPEGs (stb_image_write) in two class folders loads
 * with the right labels, class names, pixels, area resizing and center crops; a corrupt
 * file, an empty folder and a missing folder get their errors. */
#include <ftw.h>
#include <png.h>
#include <stb/stb_image_write.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"
#include "testing.h"
#include "util.h"

enum { SIZE = 8 };

static char root[] = "/tmp/ddpm_test_folder_XXXXXX";

static const char *path_of(const char *name) { return test_path(root, name); }

static void make_dir(const char *name) {
    if (mkdir(path_of(name), 0755) != 0) {
        fprintf(stderr, "cannot create %s\n", path_of(name));
        exit(2);
    }
}

static void write_png(const char *name, const uint8_t *rgb, int w, int h) {
    png_image image = {.version = PNG_IMAGE_VERSION, .width = (png_uint_32)w,
                       .height = (png_uint_32)h, .format = PNG_FORMAT_RGB};
    if (!png_image_write_to_file(&image, path_of(name), 0, rgb, 0, NULL)) {
        fprintf(stderr, "cannot write %s: %s\n", name, image.message);
        exit(2);
    }
}

static void write_text(const char *name, const char *text) {
    FILE *f = fopen(path_of(name), "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) exit(2);
}

/* A distinct colour for every pixel of an SIZE x SIZE image. */
static void pattern(uint8_t *rgb, int seed) {
    for (int i = 0; i < SIZE * SIZE; i++) {
        rgb[3 * i] = (uint8_t)(i * 3 + seed);
        rgb[3 * i + 1] = (uint8_t)(255 - i * 2);
        rgb[3 * i + 2] = (uint8_t)(i * 7 % 256);
    }
}

/* cats/a.jpg (flat colour), cats/b.png (pattern), dogs/d.png (2x2 blocks of the pattern,
 * 16x16: area resizing gives the pattern back), dogs/sub/c.png (24x8: the center crop is
 * columns 8..15), dogs/notes.txt (ignored). */
static void make_folder(uint8_t *b, uint8_t *c_mid) {
    uint8_t flat[SIZE * SIZE * 3], big[16 * 16 * 3], wide[24 * 8 * 3];
    make_dir("cats");
    make_dir("dogs");
    make_dir("dogs/sub");
    for (int i = 0; i < SIZE * SIZE; i++) memcpy(flat + 3 * i, (uint8_t[]){200, 100, 50}, 3);
    if (!stbi_write_jpg(path_of("cats/a.jpg"), SIZE, SIZE, 3, flat, 95)) exit(2);
    pattern(b, 0);
    write_png("cats/b.png", b, SIZE, SIZE);
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++)
            memcpy(big + 3 * (y * 16 + x), b + 3 * (y / 2 * SIZE + x / 2), 3);
    write_png("dogs/d.png", big, 16, 16);
    pattern(c_mid, 11);
    memset(wide, 0, sizeof wide);
    for (int y = 0; y < 8; y++) memcpy(wide + 3 * (y * 24 + 8), c_mid + 3 * y * SIZE, 3 * SIZE);
    write_png("dogs/sub/c.png", wide, 24, 8);
    write_text("dogs/notes.txt", "not an image");
}

static const uint8_t *image(const Dataset *d, int i) {
    return d->images + (size_t)i * d->height * d->width * d->channels;
}

static void test_labels_and_pixels(const uint8_t *b, const uint8_t *c_mid) {
    Dataset d;
    char err[1024] = "";
    int rc = dataset_load_folder(&d, root, SIZE, 3, 0, 0, err, sizeof err);
    CHECK(rc == 0, "load: %s", err);
    if (rc != 0) return;
    CHECK(d.count == 4 && d.num_classes == 2, "count %d, classes %d", d.count, d.num_classes);
    CHECK(!strcmp(d.class_names[0], "cats") && !strcmp(d.class_names[1], "dogs"), "class names");
    int want_labels[4] = {0, 0, 1, 1};   /* a.jpg, b.png, d.png, sub/c.png */
    for (int i = 0; i < 4 && i < d.count; i++)
        CHECK(d.labels[i] == want_labels[i], "image %d: label %d", i, d.labels[i]);
    int worst_jpeg = 0;
    for (int i = 0; i < SIZE * SIZE * 3; i++) {
        int diff = abs(image(&d, 0)[i] - (int)(uint8_t[]){200, 100, 50}[i % 3]);
        if (diff > worst_jpeg) worst_jpeg = diff;
    }
    CHECK(worst_jpeg <= 3, "flat JPEG decodes within 3 levels, worst %d", worst_jpeg);
    CHECK(!memcmp(image(&d, 1), b, SIZE * SIZE * 3), "PNG pixels exact");
    CHECK(!memcmp(image(&d, 2), b, SIZE * SIZE * 3), "16x16 of 2x2 blocks area-resizes to 8x8");
    CHECK(!memcmp(image(&d, 3), c_mid, SIZE * SIZE * 3), "24x8 center-crops to columns 8..15");
    const char *classes = path_of("classes.json");
    CHECK(dataset_write_classes(&d, classes, err, sizeof err) == 0, "classes.json: %s", err);
    size_t size;
    char *text = (char *)read_file(classes, &size, err, sizeof err);
    CHECK(text && strstr(text, "\"cats\", \"dogs\""), "classes.json lists the classes: %s", text);
    free(text);
    unlink(classes);
    dataset_free(&d);
}

/* Grey: ITU-R 601 luma of each RGB pixel, within a level of rounding. */
static void test_grey(const uint8_t *b) {
    Dataset d;
    char err[1024] = "";
    CHECK(dataset_load_folder(&d, path_of("cats"), SIZE, 1, 0, 0, err, sizeof err) == 0,
          "grey load: %s", err);
    CHECK(d.count == 2 && d.num_classes == 1 && d.channels == 1, "one class '.', 2 images");
    int worst = 0;
    for (int i = 0; d.count == 2 && i < SIZE * SIZE; i++) {
        double luma = 0.299 * b[3 * i] + 0.587 * b[3 * i + 1] + 0.114 * b[3 * i + 2];
        int diff = abs(image(&d, 1)[i] - (int)(luma + 0.5));
        if (diff > worst) worst = diff;
    }
    CHECK(worst <= 1, "grey pixels within 1 of the luma, worst %d", worst);
    dataset_free(&d);
}

static void test_limit(void) {
    Dataset d;
    char err[1024] = "";
    CHECK(dataset_load_folder(&d, root, SIZE, 3, 3, 0, err, sizeof err) == 0 && d.count == 3,
          "data_limit 3 keeps 3 images: %s", err);
    dataset_free(&d);
}

static void test_errors(void) {
    Dataset d;
    char err[1024] = "";
    write_text("dogs/e.png", "this is not a PNG");
    int rc = dataset_load_folder(&d, root, SIZE, 3, 0, 0, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "dogs/e.png") && strstr(err, "does not decode"),
          "corrupt file named: %s", err);
    CHECK(d.images == NULL && d.count == 0, "a failed load leaves the dataset empty");
    rc = dataset_load_folder(&d, root, SIZE, 3, 0, 1, err, sizeof err);
    CHECK(rc == 0 && d.count == 4 && d.skipped == 1, "skip_bad: 4 loaded, %d skipped", d.skipped);
    dataset_free(&d);
    unlink(path_of("dogs/e.png"));
    make_dir("empty");
    rc = dataset_load_folder(&d, path_of("empty"), SIZE, 3, 0, 0, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "empty") && strstr(err, "no PNG or JPEG"), "empty: %s", err);
    rc = dataset_load_folder(&d, path_of("missing"), SIZE, 3, 0, 0, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "missing") && strstr(err, "cannot read"), "missing: %s", err);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    return remove(path);
}

int main(void) {
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 2;
    }
    uint8_t b[SIZE * SIZE * 3], c_mid[SIZE * SIZE * 3];
    make_folder(b, c_mid);
    test_labels_and_pixels(b, c_mid);
    test_grey(b);
    test_limit();
    test_errors();
    nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return test_summary("test_image_folder");
}
