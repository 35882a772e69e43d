/* safetensors reading and writing.
 *
 * Layout: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON
 * (possibly padded with trailing spaces), then the data buffer. The JSON maps
 * each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}, with
 * offsets relative to the start of the data buffer, plus an optional
 * "__metadata__" object of string -> string. The JSON is parsed and printed
 * with cJSON.
 *
 * Reading loads the whole file into one buffer and validates every field
 * before anything is handed out, because checkpoints come from disk and may be
 * truncated or hand-edited: a bad file must give "<path>: <problem>", never a
 * crash or an out-of-bounds read. Tensor data pointers point into that buffer.
 *
 * ALIGNMENT: StTensor.data from st_read may be unaligned. Files written here
 * pad the header so the data buffer starts 8-byte aligned, but tensors are
 * packed contiguously in the order added (a U8 tensor of odd size shifts every
 * later tensor), and files from elsewhere may use any header length. Callers
 * must memcpy the bytes out rather than cast data to float * / double *.
 *
 * Writing assembles the whole file in memory and hands it to
 * write_file_atomic, so a failed write never damages an existing file.
 *
 * Data bytes are stored in host order; the format is little-endian, so this
 * module only builds on little-endian hosts. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this module copies bytes as-is"
#endif

#define ST_MAX_DIMS 8
#define HEADER_LENGTH_BYTES 8
/* No real header comes near this; a larger value means a corrupt length field,
 * and refusing it avoids parsing (or trusting) garbage. */
#define MAX_HEADER_BYTES (100u * 1024u * 1024u)
/* Integers above 2^53 cannot come through cJSON's double intact. */
#define MAX_EXACT_JSON_INT 9007199254740992.0
#define METADATA_KEY "__metadata__"

/* ---- dtypes ---- */

static const struct {
    const char *name;
    size_t size;
} dtype_info[] = {
    [ST_F32] = {"F32", 4}, [ST_F64] = {"F64", 8}, [ST_I32] = {"I32", 4},
    [ST_I64] = {"I64", 8}, [ST_U8] = {"U8", 1},
};
#define DTYPE_COUNT ((int)(sizeof dtype_info / sizeof dtype_info[0]))

static int dtype_from_name(const char *name, StDtype *out) {
    for (int i = 0; i < DTYPE_COUNT; i++) {
        if (strcmp(dtype_info[i].name, name) == 0) {
            *out = (StDtype)i;
            return 0;
        }
    }
    return -1;
}

static int dtype_valid(StDtype dtype) { return (int)dtype >= 0 && (int)dtype < DTYPE_COUNT; }

/* ---- small helpers shared by reader and writer ---- */

/* Formats "<path>: <problem>" into err; returns -1 so callers can `return report(...)`. */
static int report(char *err, size_t err_size, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int report(char *err, size_t err_size, const char *path, const char *fmt, ...) {
    if (!err || err_size == 0) return -1;
    int used = snprintf(err, err_size, "%s: ", path);
    if (used < 0 || (size_t)used >= err_size) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + used, err_size - (size_t)used, fmt, ap);
    va_end(ap);
    return -1;
}

int st_shape_equals(const StTensor *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return 0;
    return 1;
}

const char *st_format_shape(const int64_t *shape, int ndim, char *out, size_t out_size) {
    size_t used = (size_t)snprintf(out, out_size, "[");
    for (int i = 0; i < ndim && used < out_size; i++)
        used += (size_t)snprintf(out + used, out_size - used, "%s%lld", i ? ", " : "",
                                 (long long)shape[i]);
    if (used < out_size) snprintf(out + used, out_size - used, "]");
    return out;
}

/* Bytes needed by shape x dtype; returns -1 if that overflows size_t.
 * Dims must already be known non-negative. */
static int checked_byte_size(const int64_t *shape, int ndim, StDtype dtype, size_t *out) {
    size_t bytes = dtype_info[dtype].size;
    for (int i = 0; i < ndim; i++) {
        if ((uint64_t)shape[i] > SIZE_MAX) return -1;
        if (__builtin_mul_overflow(bytes, (size_t)shape[i], &bytes)) return -1;
    }
    *out = bytes;
    return 0;
}

static int compare_names(const void *a, const void *b) {
    const StTensor *ta = *(const StTensor *const *)a, *tb = *(const StTensor *const *)b;
    return strcmp(ta->name, tb->name);
}

/* Returns a name that occurs twice among the tensors, or NULL. Sorting keeps
 * this O(n log n) even for a hostile header with a million entries. */
static const char *find_duplicate_name(const StTensor *tensors, int count) {
    if (count < 2) return NULL;
    const StTensor **sorted = xmalloc((size_t)count * sizeof *sorted);
    for (int i = 0; i < count; i++) sorted[i] = &tensors[i];
    qsort(sorted, (size_t)count, sizeof *sorted, compare_names);
    const char *duplicate = NULL;
    for (int i = 1; i < count && !duplicate; i++)
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0) duplicate = sorted[i]->name;
    free(sorted);
    return duplicate;
}

static uint64_t read_u64_le(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void write_u64_le(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* ---- reader ---- */

/* A JSON number that is an exact non-negative integer cJSON could represent. */
static int json_to_u64(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return -1;
    double v = item->valuedouble;
    if (!isfinite(v) || v < 0 || v != floor(v) || v > MAX_EXACT_JSON_INT) return -1;
    *out = (uint64_t)v;
    return 0;
}

static int parse_dtype(StTensor *t, const cJSON *entry, const char *path, char *err,
                       size_t err_size) {
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    if (!cJSON_IsString(dtype))
        return report(err, err_size, path, "tensor '%s': missing or non-string \"dtype\"",
                      t->name);
    if (dtype_from_name(dtype->valuestring, &t->dtype) != 0)
        return report(err, err_size, path, "tensor '%s': unknown dtype '%s'", t->name,
                      dtype->valuestring);
    return 0;
}

static int parse_shape(StTensor *t, const cJSON *entry, const char *path, char *err,
                       size_t err_size) {
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    if (!cJSON_IsArray(shape))
        return report(err, err_size, path, "tensor '%s': missing or non-array \"shape\"",
                      t->name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS)
        return report(err, err_size, path,
                      "tensor '%s': shape has %d dimensions, at most %d are supported", t->name,
                      ndim, ST_MAX_DIMS);
    int i = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape) {
        uint64_t value;
        if (json_to_u64(dim, &value) != 0)
            return report(err, err_size, path,
                          "tensor '%s': shape[%d] is not a non-negative integer", t->name, i);
        t->shape[i++] = (int64_t)value;
    }
    t->ndim = ndim;
    return 0;
}

/* Reads data_offsets and checks them against the data buffer and the shape. */
static int parse_offsets(StTensor *t, const cJSON *entry, const unsigned char *data_start,
                         size_t data_size, const char *path, char *err, size_t err_size) {
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    uint64_t begin, end;
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 ||
        json_to_u64(cJSON_GetArrayItem(offsets, 0), &begin) != 0 ||
        json_to_u64(cJSON_GetArrayItem(offsets, 1), &end) != 0)
        return report(err, err_size, path,
                      "tensor '%s': \"data_offsets\" must be an array of 2 non-negative integers",
                      t->name);
    if (begin > end)
        return report(err, err_size, path,
                      "tensor '%s': data_offsets [%llu, %llu] have begin > end", t->name,
                      (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return report(err, err_size, path,
                      "tensor '%s': data_offsets [%llu, %llu] exceed the data size %zu", t->name,
                      (unsigned long long)begin, (unsigned long long)end, data_size);
    char shape_text[256];
    st_format_shape(t->shape, t->ndim, shape_text, sizeof shape_text);
    size_t needed;
    if (checked_byte_size(t->shape, t->ndim, t->dtype, &needed) != 0)
        return report(err, err_size, path, "tensor '%s': byte size of shape %s overflows",
                      t->name, shape_text);
    if (needed != end - begin)
        return report(err, err_size, path,
                      "tensor '%s': shape %s of %s needs %zu bytes but data_offsets [%llu, %llu] "
                      "hold %llu",
                      t->name, shape_text, dtype_info[t->dtype].name, needed,
                      (unsigned long long)begin, (unsigned long long)end,
                      (unsigned long long)(end - begin));
    t->nbytes = needed;
    t->data = data_start + begin;
    return 0;
}

static int parse_tensor(StTensor *t, const cJSON *entry, const unsigned char *data_start,
                        size_t data_size, const char *path, char *err, size_t err_size) {
    if (!cJSON_IsObject(entry))
        return report(err, err_size, path, "tensor '%s': entry is not a JSON object", t->name);
    if (parse_dtype(t, entry, path, err, err_size) != 0) return -1;
    if (parse_shape(t, entry, path, err, err_size) != 0) return -1;
    return parse_offsets(t, entry, data_start, data_size, path, err, err_size);
}

static int parse_metadata(StFile *f, const cJSON *meta, char *err, size_t err_size) {
    if (!cJSON_IsObject(meta))
        return report(err, err_size, f->path, "\"%s\" is not a JSON object", METADATA_KEY);
    int count = cJSON_GetArraySize(meta);
    f->meta_keys = xcalloc((size_t)count, sizeof *f->meta_keys);
    f->meta_values = xcalloc((size_t)count, sizeof *f->meta_values);
    const cJSON *item;
    cJSON_ArrayForEach(item, meta) {
        if (!cJSON_IsString(item))
            return report(err, err_size, f->path, "\"%s\" value for '%s' is not a string",
                          METADATA_KEY, item->string);
        f->meta_keys[f->meta_count] = xstrdup(item->string);
        f->meta_values[f->meta_count] = xstrdup(item->valuestring);
        f->meta_count++;
    }
    return 0;
}

static int compare_data_start(const void *a, const void *b) {
    const StTensor *ta = *(const StTensor *const *)a, *tb = *(const StTensor *const *)b;
    const unsigned char *pa = ta->data, *pb = tb->data;
    return (pa > pb) - (pa < pb);
}

/* Two tensors sharing bytes would alias each other's data: a corrupt file.
 * Sorted by start, a tensor overlaps an earlier one exactly when it starts
 * before the furthest end seen so far. Empty tensors occupy no bytes. */
static int check_overlaps(const StFile *f, const unsigned char *data_start, char *err,
                          size_t err_size) {
    if (f->count < 2) return 0;
    const StTensor **sorted = xmalloc((size_t)f->count * sizeof *sorted);
    int n = 0;
    for (int i = 0; i < f->count; i++)
        if (f->tensors[i].nbytes > 0) sorted[n++] = &f->tensors[i];
    qsort(sorted, (size_t)n, sizeof *sorted, compare_data_start);
    const StTensor *furthest = NULL;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const unsigned char *start = sorted[i]->data;
        if (furthest && start < (const unsigned char *)furthest->data + furthest->nbytes) {
            size_t a = (size_t)((const unsigned char *)furthest->data - data_start);
            size_t b = (size_t)(start - data_start);
            rc = report(err, err_size, f->path,
                        "tensors '%s' [%zu, %zu] and '%s' [%zu, %zu] overlap", furthest->name, a,
                        a + furthest->nbytes, sorted[i]->name, b, b + sorted[i]->nbytes);
        }
        if (!furthest || start + sorted[i]->nbytes >
                             (const unsigned char *)furthest->data + furthest->nbytes)
            furthest = sorted[i];
    }
    free(sorted);
    return rc;
}

/* Fills f's tensors and metadata from the parsed header. On failure f holds
 * whatever was copied so far; the caller frees it. */
static int parse_header(StFile *f, const cJSON *root, const unsigned char *data_start,
                        size_t data_size, char *err, size_t err_size) {
    if (!cJSON_IsObject(root)) return report(err, err_size, f->path, "header is not a JSON object");
    int entries = cJSON_GetArraySize(root);
    f->tensors = xcalloc((size_t)entries, sizeof *f->tensors);
    const cJSON *entry;
    cJSON_ArrayForEach(entry, root) {
        if (strcmp(entry->string, METADATA_KEY) == 0) {
            if (f->meta_keys)
                return report(err, err_size, f->path, "duplicate \"%s\"", METADATA_KEY);
            if (parse_metadata(f, entry, err, err_size) != 0) return -1;
            continue;
        }
        StTensor *t = &f->tensors[f->count++];
        t->name = xstrdup(entry->string);
        if (parse_tensor(t, entry, data_start, data_size, f->path, err, err_size) != 0) return -1;
    }
    const char *duplicate = find_duplicate_name(f->tensors, f->count);
    if (duplicate) return report(err, err_size, f->path, "duplicate tensor name '%s'", duplicate);
    return check_overlaps(f, data_start, err, err_size);
}

/* Validates the length field; sets *header_len. */
static int read_header_length(const StFile *f, uint64_t *header_len, char *err,
                              size_t err_size) {
    if (f->size < HEADER_LENGTH_BYTES)
        return report(err, err_size, f->path,
                      "file is %zu bytes, too short for the 8-byte header length", f->size);
    *header_len = read_u64_le(f->buffer);
    if (*header_len > MAX_HEADER_BYTES)
        return report(err, err_size, f->path, "header length %llu is over the %u MB limit",
                      (unsigned long long)*header_len, MAX_HEADER_BYTES / (1024u * 1024u));
    if (*header_len > f->size - HEADER_LENGTH_BYTES)
        return report(err, err_size, f->path, "header length %llu exceeds the file size %zu",
                      (unsigned long long)*header_len, f->size);
    return 0;
}

static int is_json_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* Parses the header text, which must be one JSON value followed only by
 * whitespace padding. Returns NULL with err filled on failure. */
static cJSON *parse_header_json(const StFile *f, size_t header_len, char *err, size_t err_size) {
    const char *text = (const char *)f->buffer + HEADER_LENGTH_BYTES;
    const char *parse_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, header_len, &parse_end, 0);
    if (!root) {
        size_t at = parse_end ? (size_t)(parse_end - text) : 0;
        report(err, err_size, f->path, "header is not valid JSON (error near byte %zu)", at);
        return NULL;
    }
    for (const char *p = parse_end; p < text + header_len; p++) {
        if (!is_json_space(*p)) {
            report(err, err_size, f->path,
                   "header is not valid JSON (unexpected bytes after the JSON at byte %zu)",
                   (size_t)(p - text));
            cJSON_Delete(root);
            return NULL;
        }
    }
    return root;
}

int st_read(StFile *f, const char *path, char *err, size_t err_size) {
    memset(f, 0, sizeof *f);
    f->buffer = read_file(path, &f->size, err, err_size);
    if (!f->buffer) return -1;
    f->path = xstrdup(path);
    uint64_t header_len = 0;
    if (read_header_length(f, &header_len, err, err_size) != 0) {
        st_free(f);
        return -1;
    }
    cJSON *root = parse_header_json(f, (size_t)header_len, err, err_size);
    if (!root) {
        st_free(f);
        return -1;
    }
    size_t data_offset = HEADER_LENGTH_BYTES + (size_t)header_len;
    int rc = parse_header(f, root, f->buffer + data_offset, f->size - data_offset, err, err_size);
    cJSON_Delete(root);
    if (rc != 0) st_free(f);
    return rc;
}

static void free_strings(char **strings, int count) {
    for (int i = 0; i < count; i++) free(strings[i]);
    free(strings);
}

void st_free(StFile *f) {
    for (int i = 0; i < f->count; i++) free(f->tensors[i].name);
    free(f->tensors);
    free_strings(f->meta_keys, f->meta_count);
    free_strings(f->meta_values, f->meta_count);
    free(f->buffer);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *st_meta(const StFile *f, const char *key) {
    for (int i = 0; i < f->meta_count; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

size_t st_numel(const StTensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

/* ---- writer ---- */

void st_writer_init(StWriter *w) { memset(w, 0, sizeof *w); }

/* Shape problems are recorded as given and reported by st_write, so every
 * writer error surfaces in one place with the file path attached. */
void st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                   const void *data) {
    if (w->count == w->capacity) {
        w->capacity = w->capacity ? 2 * w->capacity : 16;
        StTensor *grown = realloc(w->tensors, (size_t)w->capacity * sizeof *grown);
        if (!grown) die("out of memory adding tensor '%s'", name);
        w->tensors = grown;
    }
    StTensor *t = &w->tensors[w->count++];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name);
    t->dtype = dtype;
    t->ndim = ndim;
    int stored = ndim < 0 ? 0 : ndim > ST_MAX_DIMS ? ST_MAX_DIMS : ndim;
    if (shape && stored > 0) memcpy(t->shape, shape, (size_t)stored * sizeof *shape);
    t->data = data;
}

static int find_writer_meta(const StWriter *w, const char *key) {
    for (int i = 0; i < w->meta_count; i++)
        if (strcmp(w->meta_keys[i], key) == 0) return i;
    return -1;
}

/* Setting a key twice keeps the last value: a JSON object cannot hold both. */
void st_writer_meta(StWriter *w, const char *key, const char *value) {
    int existing = find_writer_meta(w, key);
    if (existing >= 0) {
        free(w->meta_values[existing]);
        w->meta_values[existing] = xstrdup(value);
        return;
    }
    if (w->meta_count == w->meta_capacity) {
        w->meta_capacity = w->meta_capacity ? 2 * w->meta_capacity : 8;
        char **keys = realloc(w->meta_keys, (size_t)w->meta_capacity * sizeof *keys);
        if (!keys) die("out of memory adding metadata '%s'", key);
        w->meta_keys = keys;
        char **values = realloc(w->meta_values, (size_t)w->meta_capacity * sizeof *values);
        if (!values) die("out of memory adding metadata '%s'", key);
        w->meta_values = values;
    }
    w->meta_keys[w->meta_count] = xstrdup(key);
    w->meta_values[w->meta_count] = xstrdup(value);
    w->meta_count++;
}

/* Checks one added tensor and sets its nbytes. */
static int validate_writer_tensor(StTensor *t, const char *path, char *err, size_t err_size) {
    if (strcmp(t->name, METADATA_KEY) == 0)
        return report(err, err_size, path, "tensor name '%s' is reserved", METADATA_KEY);
    if (!dtype_valid(t->dtype))
        return report(err, err_size, path, "tensor '%s': invalid dtype %d", t->name,
                      (int)t->dtype);
    if (t->ndim < 0 || t->ndim > ST_MAX_DIMS)
        return report(err, err_size, path,
                      "tensor '%s': %d dimensions, between 0 and %d are supported", t->name,
                      t->ndim, ST_MAX_DIMS);
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 0)
            return report(err, err_size, path, "tensor '%s': shape[%d] is negative (%lld)",
                          t->name, i, (long long)t->shape[i]);
    if (checked_byte_size(t->shape, t->ndim, t->dtype, &t->nbytes) != 0)
        return report(err, err_size, path, "tensor '%s': byte size overflows", t->name);
    if (t->nbytes > 0 && !t->data)
        return report(err, err_size, path, "tensor '%s': data is NULL", t->name);
    return 0;
}

static int validate_writer(StWriter *w, const char *path, char *err, size_t err_size) {
    size_t total = 0;
    for (int i = 0; i < w->count; i++) {
        if (validate_writer_tensor(&w->tensors[i], path, err, err_size) != 0) return -1;
        if (__builtin_add_overflow(total, w->tensors[i].nbytes, &total))
            return report(err, err_size, path, "total data size overflows");
    }
    const char *duplicate = find_duplicate_name(w->tensors, w->count);
    if (duplicate) return report(err, err_size, path, "duplicate tensor name '%s'", duplicate);
    return 0;
}

static cJSON *checked_json(cJSON *item) {
    if (!item) die("out of memory building a safetensors header");
    return item;
}

static cJSON *tensor_entry_json(const StTensor *t, size_t begin) {
    cJSON *entry = checked_json(cJSON_CreateObject());
    cJSON_AddItemToObject(entry, "dtype",
                          checked_json(cJSON_CreateString(dtype_info[t->dtype].name)));
    cJSON *shape = checked_json(cJSON_CreateArray());
    for (int i = 0; i < t->ndim; i++)
        cJSON_AddItemToArray(shape, checked_json(cJSON_CreateNumber((double)t->shape[i])));
    cJSON_AddItemToObject(entry, "shape", shape);
    cJSON *offsets = checked_json(cJSON_CreateArray());
    cJSON_AddItemToArray(offsets, checked_json(cJSON_CreateNumber((double)begin)));
    cJSON_AddItemToArray(offsets, checked_json(cJSON_CreateNumber((double)(begin + t->nbytes))));
    cJSON_AddItemToObject(entry, "data_offsets", offsets);
    return entry;
}

/* Header JSON text; tensors laid out contiguously in the order added. */
static char *build_header_text(const StWriter *w) {
    cJSON *root = checked_json(cJSON_CreateObject());
    if (w->meta_count > 0) {
        cJSON *meta = checked_json(cJSON_CreateObject());
        for (int i = 0; i < w->meta_count; i++)
            cJSON_AddItemToObject(meta, w->meta_keys[i],
                                  checked_json(cJSON_CreateString(w->meta_values[i])));
        cJSON_AddItemToObject(root, METADATA_KEY, meta);
    }
    size_t offset = 0;
    for (int i = 0; i < w->count; i++) {
        cJSON_AddItemToObject(root, w->tensors[i].name, tensor_entry_json(&w->tensors[i], offset));
        offset += w->tensors[i].nbytes;
    }
    char *text = cJSON_PrintUnformatted(root);
    if (!text) die("out of memory printing a safetensors header");
    cJSON_Delete(root);
    return text;
}

int st_write(StWriter *w, const char *path, char *err, size_t err_size) {
    if (validate_writer(w, path, err, err_size) != 0) return -1;
    char *json = build_header_text(w);
    size_t json_len = strlen(json);
    /* Space padding to a multiple of 8 starts the data buffer 8-byte aligned. */
    size_t header_len = (json_len + 7) / 8 * 8;
    size_t data_size = 0;
    for (int i = 0; i < w->count; i++) data_size += w->tensors[i].nbytes;
    size_t file_size = HEADER_LENGTH_BYTES + header_len + data_size;
    if (file_size < data_size) {
        cJSON_free(json);
        return report(err, err_size, path, "file size overflows");
    }
    unsigned char *file = xmalloc(file_size);
    write_u64_le(file, header_len);
    memcpy(file + HEADER_LENGTH_BYTES, json, json_len);
    memset(file + HEADER_LENGTH_BYTES + json_len, ' ', header_len - json_len);
    cJSON_free(json);
    unsigned char *out = file + HEADER_LENGTH_BYTES + header_len;
    for (int i = 0; i < w->count; i++) {
        if (w->tensors[i].nbytes > 0) memcpy(out, w->tensors[i].data, w->tensors[i].nbytes);
        out += w->tensors[i].nbytes;
    }
    int rc = write_file_atomic(path, file, file_size, err, err_size);
    free(file);
    return rc;
}

void st_writer_free(StWriter *w) {
    for (int i = 0; i < w->count; i++) free(w->tensors[i].name);
    free(w->tensors);
    free_strings(w->meta_keys, w->meta_count);
    free_strings(w->meta_values, w->meta_count);
    memset(w, 0, sizeof *w);
}
