/* Tests of the safetensors reader and writer: round trips of every dtype and
 * of edge-case shapes, reading a hand-built file (as another tool would write
 * it), rejection of each kind of corrupt file with a specific message, and
 * atomic writes. All files live in a mkdtemp directory removed at the end. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "testing.h"

static char tmp_dir[] = "/tmp/test_safetensors_XXXXXX";

/* Builds "<tmp_dir>/<name>" into out. */
static const char *tmp_path(char *out, size_t out_size, const char *name) {
    snprintf(out, out_size, "%s/%s", tmp_dir, name);
    return out;
}

static void write_bytes(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

/* Whole file into a malloc'd buffer (NULL if absent). */
static unsigned char *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc((size_t)n + 1);
    *size = fread(data, 1, (size_t)n, f);
    fclose(f);
    return data;
}

static int file_exists(const char *path) { return access(path, F_OK) == 0; }

static void put_u64_le(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Writes a file the way another producer might: the given header length field,
 * the header text exactly as given (no padding), then data_size bytes 0,1,2,... */
static void write_raw_with_length(const char *path, uint64_t length_field, const char *header,
                                  size_t data_size) {
    size_t header_size = strlen(header);
    size_t size = 8 + header_size + data_size;
    unsigned char *file = malloc(size);
    put_u64_le(file, length_field);
    memcpy(file + 8, header, header_size);
    for (size_t i = 0; i < data_size; i++) file[8 + header_size + i] = (unsigned char)i;
    write_bytes(path, file, size);
    free(file);
}

static void write_raw(const char *path, const char *header, size_t data_size) {
    write_raw_with_length(path, strlen(header), header, data_size);
}

/* st_read must fail, name the file, say `phrase`, and leave f empty. */
static void expect_read_error(const char *path, const char *phrase, const char *label) {
    StFile f;
    char err[1024] = "";
    int rc = st_read(&f, path, err, sizeof err);
    CHECK(rc == -1, "%s: st_read returned %d, expected -1", label, rc);
    CHECK(strstr(err, path) == err, "%s: error does not start with the path: '%s'", label, err);
    CHECK(strstr(err, phrase) != NULL, "%s: error '%s' lacks '%s'", label, err, phrase);
    CHECK(f.buffer == NULL && f.tensors == NULL && f.count == 0 && f.meta_count == 0 &&
              f.path == NULL,
          "%s: failed st_read left state behind", label);
    st_free(&f);   /* harmless on an emptied StFile, and frees f if rc was 0 */
}

/* A header with one entry "a" plus data_size data bytes must be rejected with phrase. */
static void expect_header_error(const char *header, size_t data_size, const char *phrase,
                                const char *label) {
    char path[512];
    tmp_path(path, sizeof path, "corrupt.safetensors");
    write_raw(path, header, data_size);
    expect_read_error(path, phrase, label);
}

static void expect_header_ok(const char *header, size_t data_size, int count, const char *label) {
    char path[512], err[1024] = "";
    tmp_path(path, sizeof path, "lenient.safetensors");
    write_raw(path, header, data_size);
    StFile f;
    int rc = st_read(&f, path, err, sizeof err);
    CHECK(rc == 0, "%s: st_read failed: %s", label, err);
    if (rc == 0) {
        CHECK(f.count == count, "%s: %d tensors, expected %d", label, f.count, count);
        st_free(&f);
    }
}

/* ---- 1. round trip ---- */

typedef struct {
    const char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[8];
    size_t nbytes;
    const void *data;
} Expected;

static void check_tensor(const StFile *f, const Expected *e) {
    const StTensor *t = st_find(f, e->name);
    CHECK(t != NULL, "tensor '%s' missing after round trip", e->name);
    if (!t) return;
    CHECK(strcmp(t->name, e->name) == 0, "name '%s' != '%s'", t->name, e->name);
    CHECK(t->dtype == e->dtype, "'%s': dtype %d != %d", e->name, (int)t->dtype, (int)e->dtype);
    CHECK(t->ndim == e->ndim, "'%s': ndim %d != %d", e->name, t->ndim, e->ndim);
    for (int i = 0; i < e->ndim && i < t->ndim; i++)
        CHECK(t->shape[i] == e->shape[i], "'%s': shape[%d] %lld != %lld", e->name, i,
              (long long)t->shape[i], (long long)e->shape[i]);
    CHECK(t->nbytes == e->nbytes, "'%s': nbytes %zu != %zu", e->name, t->nbytes, e->nbytes);
    size_t numel = 1;
    for (int i = 0; i < e->ndim; i++) numel *= (size_t)e->shape[i];
    CHECK(st_numel(t) == numel, "'%s': numel %zu != %zu", e->name, st_numel(t), numel);
    CHECK(t->nbytes != e->nbytes || e->nbytes == 0 || memcmp(t->data, e->data, e->nbytes) == 0,
          "'%s': data bytes differ", e->name);
}

static void test_round_trip(void) {
    float f32[6] = {1.5f, -2.25f, 3.0e-38f, 1.0e30f, -0.0f, 6.0f};
    double f64[4] = {3.141592653589793, -1e-300, 2.5, 1e300};
    int32_t i32[1] = {-123456789};
    int64_t i64[4] = {INT64_MIN, -1, 0, INT64_MAX};
    uint8_t u8_odd[5] = {0, 1, 127, 128, 255};
    float after_odd[3] = {7.0f, 8.0f, 9.0f};   /* lands unaligned after the 5-byte tensor */
    float eight_d[2] = {0.5f, -0.5f};
    Expected expected[] = {
        {"conv_in.weight", ST_F32, 2, {2, 3}, sizeof f32, f32},
        {"sigmas", ST_F64, 1, {4}, sizeof f64, f64},
        {"step", ST_I32, 0, {0}, sizeof i32, i32},
        {"empty", ST_U8, 3, {3, 0, 5}, 0, NULL},
        {"i64", ST_I64, 2, {2, 2}, sizeof i64, i64},
        {"bytes", ST_U8, 1, {5}, sizeof u8_odd, u8_odd},
        {"after_odd", ST_F32, 1, {3}, sizeof after_odd, after_odd},
        {"eight_dims", ST_F32, 8, {1, 1, 1, 1, 1, 1, 1, 2}, sizeof eight_d, eight_d},
    };
    int n = (int)(sizeof expected / sizeof expected[0]);

    StWriter w;
    st_writer_init(&w);
    for (int i = 0; i < n; i++)
        st_writer_add(&w, expected[i].name, expected[i].dtype, expected[i].ndim, expected[i].shape,
                      expected[i].data);
    st_writer_meta(&w, "format", "first value, replaced below");
    st_writer_meta(&w, "config", "{\"unet\": \"ünïcode\", \"tab\":\"\t\"}\n");
    st_writer_meta(&w, "empty", "");
    st_writer_meta(&w, "format", "pt");

    char path[512], err[1024] = "";
    tmp_path(path, sizeof path, "round_trip.safetensors");
    int rc = st_write(&w, path, err, sizeof err);
    CHECK(rc == 0, "st_write failed: %s", err);
    st_writer_free(&w);
    CHECK(w.tensors == NULL && w.count == 0 && w.meta_keys == NULL, "writer not reset by free");

    StFile f;
    rc = st_read(&f, path, err, sizeof err);
    CHECK(rc == 0, "st_read of a written file failed: %s", err);
    if (rc != 0) return;
    CHECK(f.count == n, "read %d tensors, wrote %d", f.count, n);
    CHECK(strcmp(f.path, path) == 0, "path not recorded");
    for (int i = 0; i < n; i++) check_tensor(&f, &expected[i]);

    /* Laid out in the order added, contiguous, data buffer 8-byte aligned. */
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = (header_len << 8) | f.buffer[i];
    CHECK(header_len % 8 == 0, "header length %llu not padded to a multiple of 8",
          (unsigned long long)header_len);
    CHECK(f.buffer[8] == '{', "header does not start with '{'");
    size_t json_end = 8 + (size_t)header_len;
    while (json_end > 8 && f.buffer[json_end - 1] == ' ') json_end--;
    CHECK(f.buffer[json_end - 1] == '}', "header padding is not spaces after the JSON");
    const unsigned char *data_start = f.buffer + 8 + header_len;
    size_t offset = 0;
    for (int i = 0; i < n && i < f.count; i++) {
        CHECK(strcmp(f.tensors[i].name, expected[i].name) == 0, "tensor %d is '%s', expected '%s'",
              i, f.tensors[i].name, expected[i].name);
        CHECK((const unsigned char *)f.tensors[i].data == data_start + offset,
              "tensor '%s' not contiguous at offset %zu", expected[i].name, offset);
        offset += expected[i].nbytes;
    }
    CHECK(8 + header_len + offset == f.size, "file size %zu != 8 + %llu + %zu", f.size,
          (unsigned long long)header_len, offset);

    /* Unaligned data is still readable with memcpy. */
    const StTensor *t = st_find(&f, "after_odd");
    if (t) {
        float copy[3];
        memcpy(copy, t->data, sizeof copy);
        CHECK(copy[0] == 7.0f && copy[2] == 9.0f, "unaligned tensor copied wrongly");
    }

    CHECK(f.meta_count == 3, "%d metadata entries, expected 3", f.meta_count);
    const char *format = st_meta(&f, "format");
    CHECK(format && strcmp(format, "pt") == 0, "metadata 'format' = '%s'", format ? format : "(null)");
    const char *config = st_meta(&f, "config");
    CHECK(config && strcmp(config, "{\"unet\": \"ünïcode\", \"tab\":\"\t\"}\n") == 0,
          "metadata 'config' = '%s'", config ? config : "(null)");
    const char *empty = st_meta(&f, "empty");
    CHECK(empty && empty[0] == 0, "metadata 'empty' not empty");
    CHECK(st_meta(&f, "absent") == NULL, "st_meta of an absent key is not NULL");
    CHECK(st_find(&f, "absent") == NULL, "st_find of an absent name is not NULL");
    st_free(&f);
    CHECK(f.buffer == NULL && f.count == 0, "st_free did not reset the file");
    st_free(&f);   /* second free is harmless */
}

static void test_empty_and_many(void) {
    char path[512], err[1024] = "";
    tmp_path(path, sizeof path, "empty.safetensors");
    StWriter w;
    st_writer_init(&w);
    int rc = st_write(&w, path, err, sizeof err);
    CHECK(rc == 0, "writing an empty file failed: %s", err);
    st_writer_free(&w);
    StFile f;
    rc = st_read(&f, path, err, sizeof err);
    CHECK(rc == 0 && f.count == 0 && f.meta_count == 0 && f.size == 16,
          "empty file: rc %d count %d size %zu (%s)", rc, f.count, f.size, err);
    if (rc == 0) st_free(&f);

    /* Enough tensors to grow the writer's arrays several times. */
    enum { MANY = 300 };
    static int32_t values[MANY];
    st_writer_init(&w);
    for (int i = 0; i < MANY; i++) {
        char name[32];
        snprintf(name, sizeof name, "block.%d.bias", i);
        values[i] = i * 7;
        int64_t shape[1] = {1};
        st_writer_add(&w, name, ST_I32, 1, shape, &values[i]);
    }
    tmp_path(path, sizeof path, "many.safetensors");
    rc = st_write(&w, path, err, sizeof err);
    CHECK(rc == 0, "writing %d tensors failed: %s", MANY, err);
    st_writer_free(&w);
    rc = st_read(&f, path, err, sizeof err);
    CHECK(rc == 0 && f.count == MANY, "reading %d tensors: rc %d count %d (%s)", MANY, rc, f.count,
          err);
    if (rc != 0) return;
    int wrong = 0;
    for (int i = 0; i < MANY; i++) {
        char name[32];
        snprintf(name, sizeof name, "block.%d.bias", i);
        const StTensor *t = st_find(&f, name);
        int32_t v = -1;
        if (t) memcpy(&v, t->data, sizeof v);
        wrong += !t || v != i * 7;
    }
    CHECK(wrong == 0, "%d of %d tensors wrong after round trip", wrong, MANY);
    st_free(&f);
}

/* ---- 2. interop: a file built byte by byte, as another writer would ---- */

static void test_hand_built(void) {
    char path[512], err[1024] = "";
    tmp_path(path, sizeof path, "hand.safetensors");
    /* 56 bytes of header, no padding: the data starts 64 bytes in. */
    const char *header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    float values[2] = {1.25f, -3.5f};
    unsigned char file[128];
    size_t header_size = strlen(header);
    put_u64_le(file, header_size);
    memcpy(file + 8, header, header_size);
    memcpy(file + 8 + header_size, values, sizeof values);
    write_bytes(path, file, 8 + header_size + sizeof values);

    StFile f;
    int rc = st_read(&f, path, err, sizeof err);
    CHECK(rc == 0, "hand-built file rejected: %s", err);
    if (rc != 0) return;
    const StTensor *a = st_find(&f, "a");
    CHECK(f.count == 1 && a && a->dtype == ST_F32 && a->ndim == 1 && a->shape[0] == 2 &&
              a->nbytes == 8,
          "hand-built tensor 'a' read wrongly");
    if (a) {
        float got[2];
        memcpy(got, a->data, sizeof got);
        CHECK(got[0] == 1.25f && got[1] == -3.5f, "hand-built data %g %g", got[0], got[1]);
    }
    CHECK(f.meta_count == 0 && st_meta(&f, "x") == NULL, "metadata appeared from nowhere");
    st_free(&f);

    /* Other producers' habits: an odd header length with space padding, fields in
     * another order, newlines, metadata last, a gap between tensors, a zero-size
     * tensor in the middle of another one's bytes. */
    expect_header_ok("{\n \"b\": {\"data_offsets\": [16, 24], \"shape\": [2, 1], \"dtype\": \"I32\"},\n"
                     " \"z\": {\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[20,20]},\n"
                     " \"__metadata__\": {\"k\": \"v\"}}   ",
                     24, 2, "padded header with a gap");
}

/* ---- 3. corrupt files ---- */

static void test_truncated(void) {
    /* A valid file, then cut short at several points. */
    float values[64];
    for (int i = 0; i < 64; i++) values[i] = (float)i;
    int64_t shape[2] = {8, 8};
    StWriter w;
    st_writer_init(&w);
    st_writer_add(&w, "w", ST_F32, 2, shape, values);
    char full_path[512], path[512], err[1024] = "";
    tmp_path(full_path, sizeof full_path, "full.safetensors");
    CHECK(st_write(&w, full_path, err, sizeof err) == 0, "st_write: %s", err);
    st_writer_free(&w);
    size_t size = 0;
    unsigned char *file = slurp(full_path, &size);
    if (!file) {
        CHECK(0, "cannot read back %s", full_path);
        return;
    }
    size_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = (header_len << 8) | file[i];
    struct {
        size_t length;
        const char *phrase;
    } cuts[] = {
        {0, "file is 0 bytes, too short for the 8-byte header length"},
        {4, "file is 4 bytes, too short"},
        {8, "exceeds the file size 8"},
        {8 + header_len / 2, "exceeds the file size"},
        {8 + header_len + 100, "exceed the data size 100"},
        {size - 1, "exceed the data size"},
    };
    tmp_path(path, sizeof path, "truncated.safetensors");
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char label[64];
        snprintf(label, sizeof label, "truncated to %zu bytes", cuts[i].length);
        write_bytes(path, file, cuts[i].length);
        expect_read_error(path, cuts[i].phrase, label);
    }
    free(file);
}

static void test_header_length(void) {
    char path[512];
    tmp_path(path, sizeof path, "length.safetensors");
    write_raw_with_length(path, 1ull << 40, "{}", 0);
    expect_read_error(path, "header length 1099511627776 is over the 100 MB limit", "2^40");
    write_raw_with_length(path, UINT64_MAX, "{}", 0);
    expect_read_error(path, "is over the 100 MB limit", "UINT64_MAX");
    write_raw_with_length(path, 3, "{}", 0);
    expect_read_error(path, "header length 3 exceeds the file size 10", "one byte too long");
    expect_read_error("/nonexistent/dir/x.safetensors", "cannot open", "missing file");
}

static void test_bad_json(void) {
    expect_header_error("{\"a\": {", 0, "header is not valid JSON", "unterminated");
    expect_header_error("", 0, "header is not valid JSON", "empty header");
    expect_header_error("{} x", 0, "unexpected bytes after the JSON", "trailing garbage");
    expect_header_error("{}}", 0, "unexpected bytes after the JSON", "extra brace");
    /* Zero bytes are not JSON padding. */
    char path[512];
    tmp_path(path, sizeof path, "nul.safetensors");
    unsigned char file[8 + 4] = {4, 0, 0, 0, 0, 0, 0, 0, '{', '}', 0, 0};
    write_bytes(path, file, sizeof file);
    expect_read_error(path, "unexpected bytes after the JSON at byte 2", "NUL padding");
    expect_header_error("[1, 2]", 0, "header is not a JSON object", "array header");
    expect_header_error("\"text\"", 0, "header is not a JSON object", "string header");
}

static void test_bad_entries(void) {
    expect_header_error("{\"a\": 5}", 0, "tensor 'a': entry is not a JSON object", "number entry");
    expect_header_error("{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                        "tensor 'a': missing or non-string \"dtype\"", "no dtype");
    expect_header_error("{\"a\": {\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                        "tensor 'a': missing or non-string \"dtype\"", "numeric dtype");
    expect_header_error("{\"a\": {\"dtype\": \"F16\", \"shape\": [1], \"data_offsets\": [0, 2]}}", 2,
                        "tensor 'a': unknown dtype 'F16'", "F16");
    expect_header_error("{\"a\": {\"dtype\": \"f32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                        "unknown dtype 'f32'", "lower-case dtype");
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4,
                        "tensor 'a': missing or non-array \"shape\"", "no shape");
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": 1, \"data_offsets\": [0, 4]}}", 4,
                        "missing or non-array \"shape\"", "scalar shape field");
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [2, -1], \"data_offsets\": [0, 4]}}",
                        4, "tensor 'a': shape[1] is not a non-negative integer", "negative dim");
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 4]}}",
                        4, "shape[0] is not a non-negative integer", "fractional dim");
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [\"2\"], \"data_offsets\": [0, 8]}}",
                        8, "shape[0] is not a non-negative integer", "string dim");
    expect_header_error("{\"a\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], "
                        "\"data_offsets\": [0, 1]}}",
                        1, "tensor 'a': shape has 9 dimensions, at most 8 are supported", "9 dims");
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4,
                        "tensor 'a': \"data_offsets\" must be an array of 2 non-negative integers",
                        "no offsets");
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}",
                        8, "\"data_offsets\" must be an array of 2", "three offsets");
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}",
                        4, "\"data_offsets\" must be an array of 2", "negative offset");
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4.5]}}",
                        8, "\"data_offsets\" must be an array of 2", "fractional offset");
}

static void test_bad_offsets(void) {
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}", 8,
                        "tensor 'a': data_offsets [8, 4] have begin > end", "begin > end");
    /* The example message from the module's specification, matched exactly. */
    char path[512], err[1024] = "", want[1024];
    tmp_path(path, sizeof path, "ckpt.safetensors");
    write_raw(path,
              "{\"conv_in.weight\": {\"dtype\": \"F32\", \"shape\": [1024], "
              "\"data_offsets\": [0, 4096]}}",
              1024);
    StFile f;
    int rc = st_read(&f, path, err, sizeof err);
    snprintf(want, sizeof want,
             "%s: tensor 'conv_in.weight': data_offsets [0, 4096] exceed the data size 1024", path);
    CHECK(rc == -1 && strcmp(err, want) == 0, "out-of-range message:\n  got  '%s'\n  want '%s'",
          err, want);
    if (rc == 0) st_free(&f);

    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 20]}}",
                        20,
                        "tensor 'a': shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 20] "
                        "hold 20",
                        "size mismatch");
    expect_header_error("{\"a\": {\"dtype\": \"F64\", \"shape\": [], \"data_offsets\": [0, 4]}}", 4,
                        "shape [] of F64 needs 8 bytes", "scalar too small");
    expect_header_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, "
                        "4294967296], \"data_offsets\": [0, 0]}}",
                        0, "tensor 'a': byte size of shape [4294967296, 4294967296, 4294967296] "
                           "overflows",
                        "overflowing shape");
    expect_header_error("{\"a\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [0, 8]},"
                        " \"b\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [4, 12]}}",
                        12, "tensors 'a' [0, 8] and 'b' [4, 12] overlap", "partial overlap");
    expect_header_error("{\"c\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [20, 22]},"
                        " \"big\": {\"dtype\": \"U8\", \"shape\": [16], \"data_offsets\": [0, 16]},"
                        " \"inner\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [4, 8]}}",
                        24, "tensors 'big' [0, 16] and 'inner' [4, 8] overlap", "contained");
    expect_header_error("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]},"
                        " \"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [4, 8]}}",
                        8, "duplicate tensor name 'a'", "duplicate name");
}

static void test_bad_metadata(void) {
    expect_header_error("{\"__metadata__\": \"v1\"}", 0, "\"__metadata__\" is not a JSON object",
                        "string metadata");
    expect_header_error("{\"__metadata__\": {\"ok\": \"yes\", \"step\": 1200}}", 0,
                        "\"__metadata__\" value for 'step' is not a string", "numeric value");
    expect_header_error("{\"__metadata__\": {\"cfg\": {\"lr\": \"1e-4\"}}}", 0,
                        "\"__metadata__\" value for 'cfg' is not a string", "nested value");
    expect_header_error("{\"__metadata__\": {}, \"__metadata__\": {}}", 0,
                        "duplicate \"__metadata__\"", "two metadata objects");
}

/* ---- 4. atomic writes and writer errors ---- */

/* st_write must fail with phrase and leave the file at path byte-identical. */
static void expect_write_error(StWriter *w, const char *path, const unsigned char *before,
                               size_t before_size, const char *phrase, const char *label) {
    char err[1024] = "";
    int rc = st_write(w, path, err, sizeof err);
    CHECK(rc == -1, "%s: st_write returned %d", label, rc);
    CHECK(strstr(err, phrase) != NULL, "%s: error '%s' lacks '%s'", label, err, phrase);
    size_t after_size = 0;
    unsigned char *after = slurp(path, &after_size);
    CHECK(after && after_size == before_size && memcmp(after, before, before_size) == 0,
          "%s: the existing file changed", label);
    free(after);
    st_writer_free(w);
}

static void test_atomic_writes(void) {
    char keep[512], missing_dir[512], tmp_name[600], err[1024] = "";
    tmp_path(keep, sizeof keep, "keep.safetensors");
    double big[1000];
    for (int i = 0; i < 1000; i++) big[i] = i * 0.5;
    int64_t big_shape[1] = {1000};
    StWriter w;
    st_writer_init(&w);
    st_writer_add(&w, "big", ST_F64, 1, big_shape, big);
    st_writer_meta(&w, "version", "1");
    CHECK(st_write(&w, keep, err, sizeof err) == 0, "st_write: %s", err);
    st_writer_free(&w);
    size_t before_size = 0;
    unsigned char *before = slurp(keep, &before_size);
    if (!before) {
        CHECK(0, "cannot read back %s", keep);
        return;
    }

    /* A path in a directory that does not exist: error, nothing created. */
    tmp_path(missing_dir, sizeof missing_dir, "no/such/dir/x.safetensors");
    float one = 1.0f;
    int64_t one_shape[1] = {1};
    st_writer_init(&w);
    st_writer_add(&w, "x", ST_F32, 1, one_shape, &one);
    int rc = st_write(&w, missing_dir, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "no/such/dir/x.safetensors") != NULL,
          "write into a missing directory: rc %d err '%s'", rc, err);
    st_writer_free(&w);
    CHECK(!file_exists(missing_dir), "a file appeared in a missing directory");
    size_t now_size = 0;
    unsigned char *now = slurp(keep, &now_size);
    CHECK(now && now_size == before_size && memcmp(now, before, before_size) == 0,
          "an unrelated file changed after a failed write");
    free(now);

    /* A write that fails midway (here: the temp file cannot be created because a
     * directory sits at its name) must leave the existing file intact; writing in
     * place would have truncated it. */
    snprintf(tmp_name, sizeof tmp_name, "%s.tmp", keep);
    CHECK(mkdir(tmp_name, 0755) == 0, "cannot create %s", tmp_name);
    st_writer_init(&w);
    st_writer_add(&w, "x", ST_F32, 1, one_shape, &one);
    expect_write_error(&w, keep, before, before_size, "keep.safetensors.tmp", "blocked temp file");
    CHECK(rmdir(tmp_name) == 0, "cannot remove %s", tmp_name);

    /* Writer errors are reported by st_write and leave the target untouched. */
    st_writer_init(&w);
    st_writer_add(&w, "w", ST_F32, 1, one_shape, &one);
    st_writer_add(&w, "v", ST_F32, 1, one_shape, &one);
    st_writer_add(&w, "w", ST_F32, 1, one_shape, &one);
    expect_write_error(&w, keep, before, before_size, "duplicate tensor name 'w'", "duplicates");
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    st_writer_init(&w);
    st_writer_add(&w, "deep", ST_F32, 9, nine, &one);
    expect_write_error(&w, keep, before, before_size, "tensor 'deep': 9 dimensions", "9 dims");
    int64_t negative[2] = {2, -3};
    st_writer_init(&w);
    st_writer_add(&w, "neg", ST_F32, 2, negative, &one);
    expect_write_error(&w, keep, before, before_size, "tensor 'neg': shape[1] is negative (-3)",
                       "negative dim");
    st_writer_init(&w);
    st_writer_add(&w, "__metadata__", ST_U8, 1, one_shape, &one);
    expect_write_error(&w, keep, before, before_size, "'__metadata__' is reserved", "reserved");
    st_writer_init(&w);
    st_writer_add(&w, "nodata", ST_F32, 1, one_shape, NULL);
    expect_write_error(&w, keep, before, before_size, "tensor 'nodata': data is NULL", "NULL data");
    st_writer_init(&w);
    st_writer_add(&w, "bad_dtype", (StDtype)42, 1, one_shape, &one);
    expect_write_error(&w, keep, before, before_size, "invalid dtype 42", "bad dtype");

    /* Overwriting replaces the file completely: a smaller file, exactly sized. */
    st_writer_init(&w);
    st_writer_add(&w, "x", ST_F32, 1, one_shape, &one);
    rc = st_write(&w, keep, err, sizeof err);
    CHECK(rc == 0, "overwrite failed: %s", err);
    st_writer_free(&w);
    StFile f;
    rc = st_read(&f, keep, err, sizeof err);
    CHECK(rc == 0, "reading the overwritten file failed: %s", err);
    if (rc == 0) {
        CHECK(f.count == 1 && st_find(&f, "x") && !st_find(&f, "big") && f.meta_count == 0,
              "overwritten file still holds old content");
        CHECK(f.size < before_size, "overwritten file not smaller (%zu vs %zu)", f.size,
              before_size);
        st_free(&f);
    }
    snprintf(tmp_name, sizeof tmp_name, "%s.tmp", keep);
    CHECK(!file_exists(tmp_name), "%s left behind", tmp_name);
    free(before);
}

/* ---- temp directory ---- */

/* Removes the temp directory; fails a check if any .tmp file was left in it. */
static void remove_tmp_dir(void) {
    DIR *dir = opendir(tmp_dir);
    if (!dir) return;
    struct dirent *entry;
    char path[512];
    while ((entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
        size_t len = strlen(entry->d_name);
        CHECK(len < 4 || strcmp(entry->d_name + len - 4, ".tmp") != 0, "stray temp file %s",
              entry->d_name);
        unlink(tmp_path(path, sizeof path, entry->d_name));
    }
    closedir(dir);
    CHECK(rmdir(tmp_dir) == 0, "could not remove %s", tmp_dir);
}

int main(void) {
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_round_trip();
    test_empty_and_many();
    test_hand_built();
    test_truncated();
    test_header_length();
    test_bad_json();
    test_bad_entries();
    test_bad_offsets();
    test_bad_metadata();
    test_atomic_writes();
    remove_tmp_dir();
    return test_summary("safetensors");
}
