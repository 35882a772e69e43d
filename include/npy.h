/* NumPy .npy files of float32 arrays (little-endian, C order): the format of x_T noise
 * files for `ddpm sample --noise` and of `ddpm invert`'s input and output. */
#ifndef DDPM_NPY_H
#define DDPM_NPY_H

#include <stddef.h>
#include <stdint.h>

/* Reads a '<f4' C-order array of at most 8 dims. Returns 0, or -1 with err naming the
 * file and the problem. *data is malloc'ed. */
int npy_read_f32(const char *path, float **data, int64_t *shape, int *ndim, char *err,
                 size_t err_size);
/* Writes atomically. Returns 0, or -1 with err filled. */
int npy_write_f32(const char *path, const float *data, const int64_t *shape, int ndim, char *err,
                  size_t err_size);

#endif
