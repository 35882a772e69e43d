/* safetensors files: an 8-byte little-endian header length, a JSON header
 * {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"key": "value", ...}}, then the raw little-endian data.
 * Reading validates everything (header length, JSON, dtypes, shapes against
 * offsets, offsets against the file size, overlaps) and reports the file and the
 * problem; writing is atomic (see write_file_atomic). */
#ifndef DDPM_SAFETENSORS_H
#define DDPM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32, ST_F64, ST_I32, ST_I64, ST_U8 } StDtype;

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[8];
    size_t nbytes;
    const void *data;        /* into the file buffer (reader; may be unaligned: memcpy it)
                                or caller memory (writer) */
} StTensor;

typedef struct {
    char *path;
    unsigned char *buffer;   /* whole file */
    size_t size;
    StTensor *tensors;
    int count;
    char **meta_keys, **meta_values;
    int meta_count;
} StFile;

/* Returns 0, or -1 with err = "<path>: <problem>". */
int st_read(StFile *f, const char *path, char *err, size_t err_size);
void st_free(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);
const char *st_meta(const StFile *f, const char *key);   /* NULL if absent */
size_t st_numel(const StTensor *t);
/* 1 if t has exactly this shape. */
int st_shape_equals(const StTensor *t, int ndim, const int64_t *shape);
/* Renders a shape as "[2, 3, 4]" for error messages (truncates if out is small). */
const char *st_format_shape(const int64_t *shape, int ndim, char *out, size_t out_size);

/* Writer: collect tensors (data not copied: must stay valid until st_write) and metadata. */
typedef struct {
    StTensor *tensors;
    int count, capacity;
    char **meta_keys, **meta_values;
    int meta_count, meta_capacity;
} StWriter;

void st_writer_init(StWriter *w);
void st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                   const void *data);
void st_writer_meta(StWriter *w, const char *key, const char *value);
/* Atomic write; returns 0 or -1 with err filled. */
int st_write(StWriter *w, const char *path, char *err, size_t err_size);
void st_writer_free(StWriter *w);

#endif
