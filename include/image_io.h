/* Writing generated images: a PNG grid, and samples.npz with arr_0 uint8 (N, H, W, C). */
#ifndef DDPM_IMAGE_IO_H
#define DDPM_IMAGE_IO_H

#include <stddef.h>
#include <stdint.h>

/* Converts floats in [-1, 1] to uint8 by round((x+1)*127.5) clamped to [0, 255]. */
void images_to_u8(uint8_t *out, const float *x, size_t count);
/* Returns n images (n, h*k, w*k, c), each pixel repeated k x k times (nearest neighbour),
 * in a new buffer the caller frees. */
uint8_t *images_upscale_nearest(const uint8_t *images, int n, int h, int w, int c, int k);
/* Writes n images (n, h, w, c) as a near-square grid with a 2-pixel border, c = 1 or 3.
 * Atomic; returns 0 or -1 with err filled. */
int write_png_grid(const char *path, const uint8_t *images, int n, int h, int w, int c,
                   char *err, size_t err_size);
/* The same grid with cols columns (0: near-square), e.g. one row per class. */
int write_png_grid_cols(const char *path, const uint8_t *images, int n, int h, int w, int c,
                        int cols, char *err, size_t err_size);
/* Writes a NumPy .npz archive holding one uint8 array arr_0 of shape (n, h, w, c). */
int write_npz_u8(const char *path, const uint8_t *images, int n, int h, int w, int c, char *err,
                 size_t err_size);
/* The same, and when labels (n) is not NULL arr_1: the labels as int64 (n) (guided-diffusion's
 * samples.npz). */
int write_npz_u8_labels(const char *path, const uint8_t *images, int n, int h, int w, int c,
                        const int32_t *labels, char *err, size_t err_size);

#endif
