/* The CPU convolution's two implementations and the choice between them.
 *
 *   im2col  (cpu_conv.c)         im2col + OpenBLAS SGEMM: the oracle, and every build's path;
 *   onednn  (cpu_conv_onednn.c)  oneDNN's direct NHWC kernels, in builds with DDPM_ONEDNN.
 *
 * DDPM_CPU_CONV=im2col|onednn picks one for the process (read at the first convolution);
 * unset, a build with oneDNN uses it. The op table's cpu_conv2d_* dispatch on the choice;
 * the tests call both paths by name. */
#ifndef DDPM_CPU_CONV_PATHS_H
#define DDPM_CPU_CONV_PATHS_H

#include "cpu_backend.h"

typedef enum { CONV_PATH_IM2COL = 0, CONV_PATH_ONEDNN = 1 } CpuConvPath;

/* The process's choice (DDPM_CPU_CONV, else the build's best); a bad value dies naming it. */
CpuConvPath cpu_conv_path(void);
/* Overrides the choice (tests and benchmarks). Returns 0, or -1 when the build lacks it. */
int cpu_conv_set_path(CpuConvPath path);
const char *cpu_conv_path_name(CpuConvPath path);

/* The im2col path: workspace bytes for s, and the two directions. dx NULL skips it;
 * residual (N, OH, OW, OC) or NULL, not y: y = conv(x) + b + residual. */
size_t im2col_conv_workspace(const ConvShape *s);
void im2col_conv_forward(const ConvShape *s, float *y, const float *x, const float *w,
                         const float *b, const float *residual, void *workspace);
void im2col_conv_backward(const ConvShape *s, float *dx, float beta, float *dw, float *db,
                          const float *dy, const float *x, const float *w, void *workspace);

#ifdef DDPM_ONEDNN
/* The oneDNN path; its primitives for a shape are made on first use and kept. */
size_t onednn_conv_workspace(const ConvShape *s);
/* residual (N, OH, OW, OC) or NULL, not y: y = conv(x) + b + residual */
void onednn_conv_forward(const ConvShape *s, float *y, const float *x, const float *w,
                         const float *b, const float *residual, void *workspace);
void onednn_conv_backward_data(const ConvShape *s, float *dx, float beta, const float *dy,
                               const float *w, void *workspace);
void onednn_conv_backward_weights(const ConvShape *s, float *dw, const float *dy,
                                  const float *x, void *workspace);
const char *onednn_version(void);
#endif

#endif
