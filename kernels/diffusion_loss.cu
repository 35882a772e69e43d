/* The losses on the GPU. diffusion_loss (backend.h): L_simple, the MSE of the prediction,
 * and the variational-bound term L_t in bits/dim, with the gradient of their weighted
 * batch mean, in one pass; cross_entropy: a classifier's softmax cross-entropy.
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

/* One thread per sample: a classifier has few classes, and the loop is the CPU's, in the
 * same order and precision. */
__global__ void cross_entropy_kernel(float *loss, float *correct, float *dlogits,
                                     const float *logits, const int32_t *labels, int n,
                                     int classes, float grad_scale) {
    const int s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= n) return;
    const float *z = logits + (size_t)s * classes;
    int best = 0;
    for (int k = 1; k < classes; k++)
        if (z[k] > z[best]) best = k;
    double sum = 0;
    for (int k = 0; k < classes; k++) sum += exp((double)z[k] - z[best]);
    const int y = labels[s];
    loss[s] = (float)(log(sum) + z[best] - z[y]);
    if (correct) correct[s] = best == y ? 1.0f : 0.0f;
    if (!dlogits) return;
    for (int k = 0; k < classes; k++) {
        const double p = exp((double)z[k] - z[best]) / sum;
        dlogits[(size_t)s * classes + k] = (float)(grad_scale * (p - (k == y)));
    }
}

void cuda_cross_entropy(float *loss, float *correct, float *dlogits, const float *logits,
                        const int32_t *labels, int n, int classes, float grad_scale) {
    if (n <= 0) return;
    cross_entropy_kernel<<<(n + THREADS - 1) / THREADS, THREADS, 0, cuda.stream>>>(
        loss, correct, dlogits, logits, labels, n, classes, grad_scale);
    cudaCheckLaunch();
}
