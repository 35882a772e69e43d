/* .npy float32 arrays: magic, version 1.0, a little-endian u16 header length, a Python
 * dict literal header padded to 64 bytes, then the raw data. */
#include "npy.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static int fail(char *err, size_t err_size, const char *path, const char *why) {
    snprintf(err, err_size, "%s: %s", path, why);
    return -1;
}

/* Parses "(a, b, c)" after 'shape': in the header dict. */
static int parse_shape(const char *header, int64_t *shape, int *ndim) {
    const char *p = strstr(header, "'shape':");
    if (!p || !(p = strchr(p, '('))) return -1;
    *ndim = 0;
    for (p++; *p && *p != ')';) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 0 || *ndim == 8) return -1;
        shape[(*ndim)++] = v;
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    return *p == ')' ? 0 : -1;
}

/* Elements in the shape, as a byte count of float32 that fits in size_t; -1 on overflow
 * (a hostile header must not wrap the count and pass the size check). */
static int checked_count(const int64_t *shape, int ndim, size_t *count) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(n, (size_t)shape[i], &n)) return -1;
    if (n > SIZE_MAX / sizeof(float)) return -1;
    *count = n;
    return 0;
}

int npy_read_f32(const char *path, float **data, int64_t *shape, int *ndim, char *err,
                 size_t err_size) {
    size_t size;
    unsigned char *bytes = read_file(path, &size, err, err_size);
    if (!bytes) return -1;
    int rc = -1;
    size_t header_len = size >= 10 ? (size_t)bytes[8] | ((size_t)bytes[9] << 8) : 0;
    if (size < 10 || memcmp(bytes, "\x93NUMPY", 6) != 0 || bytes[6] != 1) {
        fail(err, err_size, path, "not a version 1 .npy file");
    } else if (10 + header_len > size) {
        fail(err, err_size, path, "truncated header");
    } else {
        char *header = strndup((char *)bytes + 10, header_len);
        size_t count = 1;
        if (!strstr(header, "'descr': '<f4'") || !strstr(header, "'fortran_order': False"))
            fail(err, err_size, path, "expected a float32 ('<f4') array in C order");
        else if (parse_shape(header, shape, ndim) != 0)
            fail(err, err_size, path, "unreadable shape in the header");
        else if (checked_count(shape, *ndim, &count) != 0)
            fail(err, err_size, path, "the shape's element count overflows");
        else if (size - 10 - header_len != count * sizeof(float))
            fail(err, err_size, path, "data size does not match the shape");
        else {
            *data = xmalloc(count * sizeof(float));
            memcpy(*data, bytes + 10 + header_len, count * sizeof(float));
            rc = 0;
        }
        free(header);
    }
    free(bytes);
    return rc;
}

int npy_write_f32(const char *path, const float *data, const int64_t *shape, int ndim, char *err,
                  size_t err_size) {
    char header[256];
    int len = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        len += snprintf(header + len, sizeof header - (size_t)len, "%lld,%s", (long long)shape[i],
                        i + 1 < ndim ? " " : "");
        count *= (size_t)shape[i];
    }
    len += snprintf(header + len, sizeof header - (size_t)len, "), }");
    while ((10 + len + 1) % 64) header[len++] = ' ';
    header[len++] = '\n';
    size_t total = 10 + (size_t)len + count * sizeof(float);
    unsigned char *bytes = xmalloc(total);
    memcpy(bytes, "\x93NUMPY\x01\x00", 8);
    bytes[8] = (unsigned char)(len & 0xff);
    bytes[9] = (unsigned char)(len >> 8);
    memcpy(bytes + 10, header, (size_t)len);
    memcpy(bytes + 10 + len, data, count * sizeof(float));
    int rc = write_file_atomic(path, bytes, total, err, err_size);
    free(bytes);
    return rc;
}
