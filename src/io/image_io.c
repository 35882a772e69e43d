/* Output of generated images: float-to-uint8 conversion, a PNG contact sheet (libpng)
 * and samples.npz (libzip) in the layout numpy.load and the usual FID tooling expect.
 * Both files are encoded in memory and published with write_file_atomic, so a crash or
 * an encoder error never leaves a half-written file at the target path. */
#include "image_io.h"

#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#include "util.h"

enum {
    GRID_GAP = 2,                  /* dark pixels around and between the grid's images */
    PNG_MAX_SIDE = 1000000,        /* libpng's default limit on width and height */
    NPY_FIXED_BYTES = 10,          /* magic (6), version (2), header length (2) */
    NPY_ALIGN = 64,                /* the preamble is padded so the data starts aligned */
    NPY_PREAMBLE_MAX = 256,        /* ample: the dict is under 100 characters */
};

static uint8_t float_to_u8(float x) {
    double scaled = ((double)x + 1.0) * 127.5;
    if (!(scaled > 0)) return 0; /* written so that NaN lands here too */
    if (scaled >= 255) return 255;
    /* In double, halves such as x = 0 -> 127.5 are exact; for scaled > 0, adding 0.5 and
     * truncating rounds half away from zero. */
    return (uint8_t)(scaled + 0.5);
}

void images_to_u8(uint8_t *out, const float *x, size_t count) {
    for (size_t i = 0; i < count; i++) out[i] = float_to_u8(x[i]);
}

/* The callers hold these images in memory, so n*h*w*c is known to fit in size_t. */
static int check_image_shape(const char *path, int n, int h, int w, int c, char *err,
                             size_t err_size) {
    if (n > 0 && h > 0 && w > 0 && c > 0) return 0;
    snprintf(err, err_size, "%s: invalid image shape (%d, %d, %d, %d)", path, n, h, w, c);
    return -1;
}

/* ---- upscaling ---- */

uint8_t *images_upscale_nearest(const uint8_t *images, int n, int h, int w, int c, int k) {
    size_t row_out = (size_t)w * (size_t)k * (size_t)c;
    uint8_t *out = xmalloc((size_t)n * (size_t)h * (size_t)k * row_out);
    uint8_t *dst = out;
    for (size_t row = 0; row < (size_t)n * (size_t)h; row++) {
        const uint8_t *src = images + row * (size_t)w * (size_t)c;
        uint8_t *first = dst;
        for (int x = 0; x < w * k; x++, dst += c) memcpy(dst, src + (size_t)(x / k) * c, c);
        for (int copy = 1; copy < k; copy++, dst += row_out) memcpy(dst, first, row_out);
    }
    return out;
}

/* ---- PNG grid ---- */

typedef struct {
    long long cols, rows, width, height; /* long long: checked against PNG_MAX_SIDE */
} GridLayout;

/* cols columns (0: the nearest-to-square grid, ceil(sqrt(n))), as many rows as needed. */
static GridLayout grid_layout(int n, int h, int w, int fixed_cols) {
    long long cols = fixed_cols > 0 ? fixed_cols : 1;
    while (fixed_cols <= 0 && cols * cols < n) cols++;
    long long rows = (n + cols - 1) / cols;
    return (GridLayout){.cols = cols, .rows = rows,
                        .width = cols * w + (cols + 1) * GRID_GAP,
                        .height = rows * h + (rows + 1) * GRID_GAP};
}

/* Copies the images into a zeroed canvas, row-major through the grid. */
static void compose_grid(uint8_t *canvas, const GridLayout *g, const uint8_t *images, int n,
                         int h, int w, int c) {
    size_t image_row = (size_t)w * (size_t)c, canvas_row = (size_t)g->width * (size_t)c;
    for (int i = 0; i < n; i++) {
        size_t top = GRID_GAP + (size_t)(i / g->cols) * (size_t)(h + GRID_GAP);
        size_t left = GRID_GAP + (size_t)(i % g->cols) * (size_t)(w + GRID_GAP);
        const uint8_t *src = images + (size_t)i * (size_t)h * image_row;
        for (int y = 0; y < h; y++)
            memcpy(canvas + (top + (size_t)y) * canvas_row + left * (size_t)c,
                   src + (size_t)y * image_row, image_row);
    }
}

/* libpng's I/O and error callbacks share this: the encoded bytes and the last error. */
typedef struct {
    unsigned char *bytes;
    size_t size, capacity;
    char error[256];
} PngWriter;

static void png_append(png_structp png, png_bytep data, size_t length) {
    PngWriter *out = png_get_io_ptr(png);
    if (length > out->capacity - out->size) {
        size_t capacity = out->capacity ? out->capacity * 2 : 1 << 16;
        while (capacity - out->size < length) capacity *= 2;
        unsigned char *grown = realloc(out->bytes, capacity);
        if (!grown) png_error(png, "out of memory");
        out->bytes = grown;
        out->capacity = capacity;
    }
    memcpy(out->bytes + out->size, data, length);
    out->size += length;
}

/* Nothing is buffered between png_append calls. Without this, libpng's default would
 * fflush the io pointer as if it were a FILE*. */
static void png_flush_nothing(png_structp png) {}

/* Keeps the message for our err string instead of libpng's stderr print, then unwinds. */
static void on_png_error(png_structp png, png_const_charp message) {
    PngWriter *out = png_get_error_ptr(png);
    snprintf(out->error, sizeof out->error, "%s", message);
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp message) {
    warn("libpng: %s", message);
}

/* Encodes an 8-bit gray (c = 1) or RGB (c = 3) image into out->bytes. */
static int encode_png(PngWriter *out, const uint8_t *pixels, int width, int height, int c) {
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, out, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(out->error, sizeof out->error, "cannot create the libpng writer");
        return -1;
    }
    /* png and info are not changed after setjmp, so they need not be volatile. */
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_set_write_fn(png, out, png_append, png_flush_nothing);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8,
                 c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t stride = (size_t)width * (size_t)c;
    for (int y = 0; y < height; y++) png_write_row(png, pixels + (size_t)y * stride);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int write_png_grid(const char *path, const uint8_t *images, int n, int h, int w, int c,
                   char *err, size_t err_size) {
    return write_png_grid_cols(path, images, n, h, w, c, 0, err, err_size);
}

int write_png_grid_cols(const char *path, const uint8_t *images, int n, int h, int w, int c,
                        int cols, char *err, size_t err_size) {
    if (check_image_shape(path, n, h, w, c, err, err_size) != 0) return -1;
    if (c != 1 && c != 3) {
        snprintf(err, err_size, "%s: PNG grid needs 1 or 3 channels, got %d", path, c);
        return -1;
    }
    GridLayout g = grid_layout(n, h, w, cols);
    if (g.width > PNG_MAX_SIDE || g.height > PNG_MAX_SIDE) {
        snprintf(err, err_size, "%s: a %lld x %lld grid is too large for a PNG", path, g.width,
                 g.height);
        return -1;
    }
    uint8_t *canvas = xcalloc((size_t)g.width * (size_t)g.height, (size_t)c);
    compose_grid(canvas, &g, images, n, h, w, c);
    PngWriter out = {0};
    int rc = encode_png(&out, canvas, (int)g.width, (int)g.height, c);
    free(canvas);
    if (rc != 0) snprintf(err, err_size, "%s: PNG encoding failed: %s", path, out.error);
    else rc = write_file_atomic(path, out.bytes, out.size, err, err_size);
    free(out.bytes);
    return rc;
}

/* ---- NPZ ---- */

/* Writes the .npy v1.0 preamble of a C-order uint8 array of shape (n, h, w, c): magic,
 * version, little-endian header length, then the header dict padded with spaces and a
 * final '\n' to a multiple of NPY_ALIGN bytes. Returns the preamble's length. */
static size_t npy_preamble_of(unsigned char out[NPY_PREAMBLE_MAX], const char *descr,
                              const char *shape) {
    char dict[NPY_PREAMBLE_MAX];
    int dict_len = snprintf(dict, sizeof dict,
                            "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
    size_t unpadded = NPY_FIXED_BYTES + (size_t)dict_len + 1; /* + 1 for the '\n' */
    size_t total = (unpadded + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
    size_t header_len = total - NPY_FIXED_BYTES;
    memcpy(out, "\x93NUMPY\x01\x00", 8);
    out[8] = (unsigned char)(header_len & 0xff);
    out[9] = (unsigned char)(header_len >> 8);
    memcpy(out + NPY_FIXED_BYTES, dict, (size_t)dict_len);
    memset(out + NPY_FIXED_BYTES + dict_len, ' ', header_len - (size_t)dict_len - 1);
    out[total - 1] = '\n';
    return total;
}

static size_t npy_preamble(unsigned char out[NPY_PREAMBLE_MAX], int n, int h, int w, int c) {
    char shape[128];
    snprintf(shape, sizeof shape, "(%d, %d, %d, %d)", n, h, w, c);
    return npy_preamble_of(out, "|u1", shape);
}

/* Adds one uncompressed entry made of the given pieces (not copied; they must outlive
 * zip_close). Stored, not deflated: numpy.savez does the same and it is much faster. */
static int add_stored_entry(zip_t *archive, const char *name, zip_buffer_fragment_t *parts,
                            int n_parts, char *msg, size_t msg_size) {
    zip_error_t error;
    zip_error_init(&error);
    zip_source_t *entry =
        zip_source_buffer_fragment_create(parts, (zip_uint64_t)n_parts, 0, &error);
    int rc = 0;
    if (!entry) {
        snprintf(msg, msg_size, "%s", zip_error_strerror(&error));
        rc = -1;
    } else {
        zip_int64_t index = zip_file_add(archive, name, entry, ZIP_FL_OVERWRITE);
        if (index < 0) zip_source_free(entry); /* on success the archive owns it */
        if (index < 0 ||
            zip_set_file_compression(archive, (zip_uint64_t)index, ZIP_CM_STORE, 0) != 0) {
            snprintf(msg, msg_size, "%s", zip_strerror(archive));
            rc = -1;
        }
    }
    zip_error_fini(&error);
    return rc;
}

/* Copies the finished archive out of libzip's in-memory source. */
static int read_source(zip_source_t *source, unsigned char **bytes, size_t *size, char *msg,
                       size_t msg_size) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_source_stat(source, &st) != 0 || !(st.valid & ZIP_STAT_SIZE) ||
        zip_source_open(source) != 0) {
        snprintf(msg, msg_size, "%s", zip_error_strerror(zip_source_error(source)));
        return -1;
    }
    *bytes = xmalloc((size_t)st.size);
    zip_int64_t got = zip_source_read(source, *bytes, st.size);
    zip_source_close(source);
    if (got < 0 || (zip_uint64_t)got != st.size) {
        snprintf(msg, msg_size, "read %lld of %llu archive bytes", (long long)got,
                 (unsigned long long)st.size);
        free(*bytes);
        *bytes = NULL;
        return -1;
    }
    *size = (size_t)st.size;
    return 0;
}

/* Builds a zip archive holding one entry (two when name2 is not NULL: parts2), entirely in
 * memory. */
static int zip_in_memory(const char *name, zip_buffer_fragment_t *parts, int n_parts,
                         const char *name2, zip_buffer_fragment_t *parts2, int n_parts2,
                         unsigned char **bytes, size_t *size, char *msg, size_t msg_size) {
    zip_error_t error;
    zip_error_init(&error);
    zip_source_t *memory = zip_source_buffer_create(NULL, 0, 0, &error);
    zip_t *archive = memory ? zip_open_from_source(memory, ZIP_TRUNCATE, &error) : NULL;
    if (!archive) {
        snprintf(msg, msg_size, "%s", zip_error_strerror(&error));
        zip_source_free(memory);
        zip_error_fini(&error);
        return -1;
    }
    zip_error_fini(&error);
    zip_source_keep(memory); /* the archive frees its source on close; we read it after */
    int rc = add_stored_entry(archive, name, parts, n_parts, msg, msg_size);
    if (rc == 0 && name2) rc = add_stored_entry(archive, name2, parts2, n_parts2, msg, msg_size);
    if (rc == 0 && zip_close(archive) != 0) {
        snprintf(msg, msg_size, "%s", zip_strerror(archive));
        rc = -1;
    }
    if (rc != 0) zip_discard(archive);
    else rc = read_source(memory, bytes, size, msg, msg_size);
    zip_source_free(memory);
    return rc;
}

int write_npz_u8(const char *path, const uint8_t *images, int n, int h, int w, int c, char *err,
                 size_t err_size) {
    return write_npz_u8_labels(path, images, n, h, w, c, NULL, err, err_size);
}

int write_npz_u8_labels(const char *path, const uint8_t *images, int n, int h, int w, int c,
                        const int32_t *labels, char *err, size_t err_size) {
    if (check_image_shape(path, n, h, w, c, err, err_size) != 0) return -1;
    unsigned char preamble[NPY_PREAMBLE_MAX];
    size_t preamble_size = npy_preamble(preamble, n, h, w, c);
    size_t data_size = (size_t)n * (size_t)h * (size_t)w * (size_t)c;
    /* libzip's fragment type is non-const, but with freep = 0 it only reads the data. */
    zip_buffer_fragment_t parts[2] = {{preamble, preamble_size},
                                      {(zip_uint8_t *)images, data_size}};
    unsigned char *archive = NULL;
    size_t archive_size = 0;
    char reason[256];
    /* arr_1: the labels as int64, as numpy.savez writes guided-diffusion's */
    unsigned char label_preamble[NPY_PREAMBLE_MAX];
    char label_shape[32];
    snprintf(label_shape, sizeof label_shape, "(%d,)", n);
    int64_t *wide = labels ? xmalloc((size_t)n * sizeof(int64_t) + 1) : NULL;
    for (int i = 0; labels && i < n; i++) wide[i] = labels[i];
    zip_buffer_fragment_t label_parts[2] = {
        {label_preamble, npy_preamble_of(label_preamble, "<i8", label_shape)},
        {(zip_uint8_t *)wide, (size_t)n * sizeof(int64_t)}};
    int zipped = zip_in_memory("arr_0.npy", parts, 2, labels ? "arr_1.npy" : NULL, label_parts,
                               2, &archive, &archive_size, reason, sizeof reason);
    free(wide);
    if (zipped != 0) {
        snprintf(err, err_size, "%s: building the zip archive failed: %s", path, reason);
        return -1;
    }
    int rc = write_file_atomic(path, archive, archive_size, err, err_size);
    free(archive);
    return rc;
}
