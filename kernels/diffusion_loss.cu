/* The fused DDPM losses on the GPU (backend.h: diffusion_loss): L_simple, the MSE of
 * the prediction, and the variational-bound term L_t in bits/dim, with the gradient
 * of their weighted batch mean, in one pass.
 *
 * One block per sample; each thread takes elements THREADS apart and evaluates, in
 * double, what src/cpu_loss.c evaluates for that element, with the shared formulas
 * of vlb_math.h; the per-sample sums go through the fixed-order block_sum. */
#include "cuda_ops.cuh"
#include "vlb_math.h"

__global__ void diffusion_loss_kernel(float *mse, float *vb, float *dout, const float *out,
                                      const float *target, const float *x0, const float *x_t,
                                      const int32_t *t, const float *weight, int n, int hw,
                                      int c, LossSpec spec, DiffusionTables tables) {
    const int s = blockIdx.x;
    const StepTables st = gather_step_tables(&tables, t[s]);
    const double scale = (weight ? weight[s] : 1.0) / n;
    const size_t d = (size_t)hw * c, stride = spec.learned_var ? 2 * (size_t)c : (size_t)c;
    const double inv_d = 1.0 / (double)d, inv_ln2 = 1.0 / log(2.0);
    double mse_sum = 0, vb_sum = 0;
    for (size_t e = threadIdx.x; e < d; e += THREADS) {
        const size_t i = (size_t)s * d + e;                                /* x0, x_t, target */
        const size_t pi = ((size_t)s * hw + e / c) * stride + e % c;       /* prediction */
        const double pred = out[pi], diff = pred - target[i];
        double d_pred = 0, d_v = 0;
        mse_sum += diff * diff;
        if (vb) {
            const double v = spec.learned_var ? out[pi + c] : 0.0;
            vb_sum += vb_element(&st, &spec, pred, v, x0[i], x_t[i], &d_pred, &d_v);
            d_pred *= spec.vb_trains_mean ? spec.vb_weight * inv_d * inv_ln2 : 0.0;
            d_v *= spec.vb_weight * inv_d * inv_ln2;
        }
        if (!dout) continue;
        dout[pi] = (float)(scale * (spec.mse_weight * 2.0 * diff * inv_d + d_pred));
        if (spec.learned_var) dout[pi + c] = (float)(scale * d_v);
    }
    mse_sum = block_sum(mse_sum);
    vb_sum = block_sum(vb_sum);
    if (threadIdx.x != 0) return;
    if (mse) mse[s] = (float)(mse_sum * inv_d);
    if (vb) vb[s] = (float)(vb_sum * inv_d * inv_ln2);
}

void cuda_diffusion_loss(float *mse, float *vb, float *dout, const float *out,
                         const float *target, const float *x0, const float *x_t,
                         const int32_t *t, const float *weight, int n, int hw, int c,
                         LossSpec spec, DiffusionTables tables) {
    if (n <= 0) return;
    diffusion_loss_kernel<<<n, THREADS, 0, cuda.stream>>>(mse, vb, dout, out, target, x0, x_t, t,
                                                          weight, n, hw, c, spec, tables);
    cudaCheckLaunch();
}
