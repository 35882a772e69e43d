/* The CPU backend's ops: the reference implementation of every op in backend.h.
 * cpu_<op> has the semantics documented for the op's entry in BACKEND_OPS; the
 * prototypes are generated from that list, and src/cpu/cpu_backend.c assembles the
 * table from it. Where they live:
 *   memory ops              src/cpu/cpu_backend.c
 *   conv2d_*                src/cpu/cpu_conv.c (oneDNN, or im2col + OpenBLAS SGEMM; NHWC)
 *   linear_*, attention_*   src/cpu/cpu_dense.c (cpu_gemm.c: oneDNN's matmul or OpenBLAS)
 *   groupnorm_*             src/cpu/cpu_norm.c
 *   elementwise, layout, timestep_embedding, embedding_*   src/cpu/cpu_pointwise.c
 *   q_sample_images, mse_loss, sample_update(_indexed), normal_fill,
 *   fill_indexed, advance_step,
 *   guidance_combine                                       src/cpu/cpu_diffusion_ops.c
 *   diffusion_loss, cross_entropy                          src/cpu/cpu_loss.c
 *   global_norm, adamw, ema_update, optimizer_control,
 *   adamw_state, ema_update_state                          src/cpu/cpu_optim.c
 *   alloc_host, to_host_async (a plain copy), graph_* (none)  src/cpu/cpu_backend.c
 *   gaussian_sample_*, gaussian_kl, recon_loss             src/cpu/cpu_vae.c */
#ifndef DDPM_CPU_BACKEND_H
#define DDPM_CPU_BACKEND_H

#include "backend.h"

#define CPU_OP_PROTOTYPE(ret, op, params) ret cpu_##op params;
BACKEND_OPS(CPU_OP_PROTOTYPE)
#undef CPU_OP_PROTOTYPE

/* src/cpu/cpu_dense.c: sums (cols) = column sums of m (rows, cols), in double,
 * deterministic: the bias gradients */
void cpu_column_sums(float *sums, const float *m, size_t rows, int cols);

/* src/cpu/cpu_pointwise.c: silu_forward/backward on the calling thread alone, for callers
 * inside a parallel region that go chunk by chunk (GroupNorm's fused SiLU): there even an
 * OpenMP construct that stays on one thread costs about a microsecond a call, which made the
 * fused SiLU cost three times the GroupNorm it follows. */
void cpu_silu_range(float *y, const float *x, size_t n);
void cpu_silu_backward_range(float *dx, float beta, const float *dy, const float *x, size_t n);

/* src/cpu/cpu_pointwise.c: dropout_forward/backward's result for elements [e0, e0 + count)
 * of sample s alone (any e0; p > 0): out = beta*out + in*mask/(1-p), the same mask and
 * float operations. GroupNorm's fused dropout applies it to a chunk while it is in cache. */
void cpu_dropout_range(float *out, float beta, const float *in, size_t count, uint32_t s,
                       size_t e0, float p, RngKey key);

/* src/cpu/cpu_dense.c: cpu_linear_forward plus residual (M, N) or NULL, not y: y is seeded
 * with residual + b and the GEMM adds onto it (beta 1), so a convolution's skip add costs
 * no pass of its own. */
void cpu_linear_forward_residual(float *y, const float *x, const float *w, const float *b,
                                 const float *residual, int m, int k, int n);

/* Host scratch that an op keeps between calls, so the step loop allocates nothing: the
 * first call that needs more (the first step) grows it, later calls reuse it. Its
 * contents are not kept. One per op file; the CPU ops run on one calling thread. */
typedef struct {
    void *data;
    size_t bytes;
} CpuScratch;
void *cpu_scratch(CpuScratch *s, size_t bytes);

/* Which of two implementations the environment variable var picks: 0 for names[0] (every
 * build has it), 1 for names[1] (built when second_built); unset, the second where built.
 * A value that is neither, or names a path the build lacks, dies naming var. */
int cpu_env_choice(const char *var, const char *const names[2], int second_built);

#endif
