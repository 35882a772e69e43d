/* The CPU backend's ops: the reference implementation of every op in backend.h.
 * cpu_<op> has the semantics documented for the op's entry in BACKEND_OPS; the
 * prototypes are generated from that list, and src/cpu/cpu_backend.c assembles the
 * table from it. Where they live:
 *   memory ops              src/cpu/cpu_backend.c
 *   conv2d_*                src/cpu/cpu_conv.c (im2col + OpenBLAS SGEMM, NHWC)
 *   linear_*, attention_*   src/cpu/cpu_dense.c (OpenBLAS SGEMM)
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

/* Host scratch that an op keeps between calls, so the step loop allocates nothing: the
 * first call that needs more (the first step) grows it, later calls reuse it. Its
 * contents are not kept. One per op file; the CPU ops run on one calling thread. */
typedef struct {
    void *data;
    size_t bytes;
} CpuScratch;
void *cpu_scratch(CpuScratch *s, size_t bytes);

#endif
