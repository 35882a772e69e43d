/* Folders of PNG/JPEG images (see dataset_load_folder in data.h).
 * Decoding and resizing come from stb (Debian's libstb-dev): stb_image decodes PNG and
 * JPEG and converts to grey or RGB, stb_image_resize's box filter is an exact area
 * average. One small library, with no dependency tree, covers all of it. */
#include <dirent.h>
#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "data.h"
#include "util.h"

#include <cjson/cJSON.h>

typedef struct {
    char **items;
    int count, capacity;
} Names;

static void names_add(Names *n, const char *text) {
    if (n->count == n->capacity) {
        n->capacity = n->capacity ? 2 * n->capacity : 64;
        n->items = realloc(n->items, (size_t)n->capacity * sizeof(char *));
        if (!n->items) die("out of memory listing image files");
    }
    n->items[n->count++] = xstrdup(text);
}

static void names_free(Names *n) {
    for (int i = 0; i < n->count; i++) free(n->items[i]);
    free(n->items);
    *n = (Names){0};
}

/* Byte order, as Python's sorted() (torchvision) gives, independent of the locale. */
static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void names_sort(Names *n) {
    if (n->count > 1) qsort(n->items, (size_t)n->count, sizeof(char *), compare_names);
}

static int is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") ||
                   !strcasecmp(dot, ".jpeg"));
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Entries of dir (not . or ..): subfolders into dirs, image files into files (full paths
 * for files, plain names for dirs), each sorted. Returns 0, or -1 if dir cannot be read. */
static int list_dir(const char *dir, Names *dirs, Names *files, int full_dir_paths) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || !strcmp(e->d_name, ".."))) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (is_dir(path)) names_add(dirs, full_dir_paths ? path : e->d_name);
        else if (is_image_name(e->d_name)) names_add(files, path);
    }
    closedir(d);
    names_sort(dirs);
    names_sort(files);
    return 0;
}

/* Every image file under dir, at any depth, in sorted path order. */
static void collect_images(const char *dir, Names *files) {
    Names dirs = {0};
    list_dir(dir, &dirs, files, 1);
    for (int i = 0; i < dirs.count; i++) collect_images(dirs.items[i], files);
    names_free(&dirs);
    names_sort(files);
}

/* Shorter side to size by area averaging, then the central size x size square. */
static int resize_and_crop(const uint8_t *pixels, int w, int h, int c, int size, uint8_t *out) {
    int short_side = w < h ? w : h;
    int rw = w == short_side ? size : (int)((double)w * size / short_side + 0.5);
    int rh = h == short_side ? size : (int)((double)h * size / short_side + 0.5);
    uint8_t *resized = xmalloc((size_t)rw * rh * c);
    int ok = rw == w && rh == h
                 ? (memcpy(resized, pixels, (size_t)w * h * c), 1)
                 : stbir_resize_uint8_generic(pixels, w, h, 0, resized, rw, rh, 0, c,
                                              STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP,
                                              STBIR_FILTER_BOX, STBIR_COLORSPACE_LINEAR, NULL);
    int x0 = (rw - size) / 2, y0 = (rh - size) / 2;
    for (int y = 0; ok && y < size; y++)
        memcpy(out + (size_t)y * size * c, resized + ((size_t)(y0 + y) * rw + x0) * c,
               (size_t)size * c);
    free(resized);
    return ok;
}

/* Decodes one file into out (size x size x channels). Returns 0, or -1 with err filled. */
static int load_image(const char *path, int size, int channels, uint8_t *out, char *err,
                      size_t err_size) {
    int w, h, file_channels;
    uint8_t *pixels = stbi_load(path, &w, &h, &file_channels, channels);
    if (!pixels) {
        snprintf(err, err_size, "%s: does not decode as PNG or JPEG (%s)", path,
                 stbi_failure_reason());
        return -1;
    }
    int ok = resize_and_crop(pixels, w, h, channels, size, out);
    stbi_image_free(pixels);
    if (!ok) snprintf(err, err_size, "%s: resizing %dx%d to %d failed", path, w, h, size);
    return ok ? 0 : -1;
}

/* The class folders (sorted), or "." alone when dir has none. */
static int list_classes(const char *dir, Names *classes, char *err, size_t err_size) {
    Names files = {0};
    if (list_dir(dir, classes, &files, 0) != 0) {
        snprintf(err, err_size, "%s: cannot read the folder (data_path)", dir);
        return -1;
    }
    names_free(&files);
    if (classes->count == 0) names_add(classes, ".");
    return 0;
}

static void add_image(Dataset *d, int *capacity, int label, int size) {
    size_t image_bytes = (size_t)size * size * d->channels;
    if (d->count == *capacity) {
        *capacity = *capacity ? 2 * *capacity : 256;
        d->images = realloc(d->images, (size_t)*capacity * image_bytes);
        d->labels = realloc(d->labels, (size_t)*capacity * sizeof(int32_t));
        if (!d->images || !d->labels) die("out of memory loading images");
    }
    d->labels[d->count++] = label;
}

static int load_class(Dataset *d, const char *path, int label, int *capacity, int limit,
                      int skip_bad, char *err, size_t err_size) {
    Names files = {0};
    collect_images(path, &files);
    int rc = 0;
    for (int i = 0; i < files.count && rc == 0 && (limit <= 0 || d->count < limit); i++) {
        add_image(d, capacity, label, d->height);
        uint8_t *slot = d->images + (size_t)(d->count - 1) * d->height * d->width * d->channels;
        if (load_image(files.items[i], d->height, d->channels, slot, err, err_size) == 0) continue;
        d->count--;
        if (skip_bad) d->skipped++;
        else rc = -1;
    }
    names_free(&files);
    return rc;
}

int dataset_load_folder(Dataset *d, const char *dir, int size, int channels, int limit,
                        int skip_bad, char *err, size_t err_size) {
    *d = (Dataset){.height = size, .width = size, .channels = channels};
    Names classes = {0};
    if (list_classes(dir, &classes, err, err_size) != 0) return -1;
    int capacity = 0, rc = 0;
    char path[4096];
    for (int i = 0; i < classes.count && rc == 0; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, classes.items[i]);
        rc = load_class(d, path, i, &capacity, limit, skip_bad, err, err_size);
    }
    if (rc == 0 && d->count == 0) {
        snprintf(err, err_size, "%s: no PNG or JPEG files that decode (%d skipped; classes "
                 "are its subfolders)", dir, d->skipped);
        rc = -1;
    }
    d->num_classes = classes.count;
    d->class_names = classes.items;   /* the Dataset owns them now */
    if (rc != 0) dataset_free(d);
    return rc;
}

int dataset_write_classes(const Dataset *d, const char *path, char *err, size_t err_size) {
    int *counts = xcalloc((size_t)d->num_classes + 1, sizeof(int));
    for (int i = 0; i < d->count; i++) counts[d->labels[i]]++;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddItemToObject(j, "classes",
                          cJSON_CreateStringArray((const char *const *)d->class_names,
                                                  d->num_classes));
    cJSON_AddItemToObject(j, "counts", cJSON_CreateIntArray(counts, d->num_classes));
    cJSON_AddNumberToObject(j, "skipped", d->skipped);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    free(counts);
    if (!text) die("out of memory printing %s", path);
    int rc = write_file_atomic(path, text, strlen(text), err, err_size);
    free(text);
    return rc;
}
