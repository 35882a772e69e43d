/* Reading sample archives: a NumPy .npz with arr_0 uint8 (N, H, W, C), the images (as
 * `ddpm sample` and guided-diffusion write them), and optionally arr_1 (N) integer class
 * labels (int64 or int32). */
#ifndef DDPM_NPZ_H
#define DDPM_NPZ_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *images;     /* (n, h, w, c) */
    int32_t *labels;     /* (n), or NULL without arr_1 */
    int n, h, w, c;
} NpzSamples;

/* Returns 0, or -1 with err naming the file and the problem (not a zip, no arr_0, a dtype
 * or shape it does not hold, labels out of int32 range, a count that differs). */
int npz_read_samples(const char *path, NpzSamples *out, char *err, size_t err_size);
void npz_samples_free(NpzSamples *s);

#endif
