/* The KL autoencoder's ops on CUDA (backend.h), the same formulas as src/cpu/cpu_vae.c:
 *   gaussian_sample_*: elementwise over the latent;
 *   gaussian_kl:       one block per sample, the sum in double with the fixed-order
 *                      block_sum, the gradient in the same pass;
 *   recon_loss:        likewise, and the learned log variance's gradient from a second
 *                      one-block kernel that sums the samples in order (no atomics). */
#include "cuda_ops.cuh"

#define LOGVAR_MIN -30.0f
#define LOGVAR_MAX 20.0f

__device__ __forceinline__ float clamp_logvar(float lv) {
    return fminf(fmaxf(lv, LOGVAR_MIN), LOGVAR_MAX);
}

__device__ __forceinline__ bool clamp_passes(float lv) {
    return lv >= LOGVAR_MIN && lv <= LOGVAR_MAX;
}

void cuda_gaussian_sample_forward(float *z, const float *moments, const float *noise, int n,
                                  int hw, int c) {
    launch_elementwise((size_t)n * hw * c, [=] __device__(size_t i) {
        const size_t p = i / c, ch = i % c;
        const float mean = moments[p * 2 * c + ch], lv = moments[p * 2 * c + c + ch];
        z[i] = mean + expf(0.5f * clamp_logvar(lv)) * noise[i];
    });
}

void cuda_gaussian_sample_backward(float *dmoments, float beta, const float *dz,
                                   const float *moments, const float *noise, int n, int hw,
                                   int c) {
    if (!dmoments) return;
    launch_elementwise((size_t)n * hw * c, [=] __device__(size_t i) {
        const size_t p = i / c, ch = i % c, im = p * 2 * c + ch, il = im + c;
        const float lv = moments[il];
        const float dlv =
            clamp_passes(lv) ? dz[i] * noise[i] * expf(0.5f * clamp_logvar(lv)) * 0.5f : 0.0f;
        dmoments[im] = blend(dmoments[im], beta, dz[i]);
        dmoments[il] = blend(dmoments[il], beta, dlv);
    });
}

__global__ void gaussian_kl_kernel(float *kl, float *dmoments, const float *moments, size_t d,
                                   int c, double scale) {
    double sum = 0;
    for (size_t e = threadIdx.x; e < d; e += THREADS) {
        const size_t p = (size_t)blockIdx.x * (d / c) + e / c, ch = e % c;
        const size_t im = p * 2 * c + ch, il = im + c;
        const double mean = moments[im], lv = clamp_logvar(moments[il]);
        const double var = exp(lv);
        sum += mean * mean + var - 1.0 - lv;
        if (!dmoments) continue;
        dmoments[im] = (float)(scale * mean);
        dmoments[il] = clamp_passes(moments[il]) ? (float)(scale * 0.5 * (var - 1.0)) : 0.0f;
    }
    sum = block_sum(sum);
    if (threadIdx.x == 0) kl[blockIdx.x] = (float)(0.5 * sum);
}

void cuda_gaussian_kl(float *kl, float *dmoments, const float *moments, int n, int hw, int c,
                      float weight) {
    if (n <= 0) return;
    gaussian_kl_kernel<<<n, THREADS, 0, cuda.stream>>>(kl, dmoments, moments, (size_t)hw * c, c,
                                                      (double)weight / n);
    cudaCheckLaunch();
}

__device__ __forceinline__ double recon_term(float out, float target, int l1) {
    const double diff = (double)out - (double)target;
    return l1 ? fabs(diff) : diff * diff;
}

__global__ void recon_loss_kernel(float *loss, float *dout, const float *out, const float *target,
                                  const float *logvar, size_t d, int n, int l1) {
    const double lv = logvar ? (double)*logvar : 0.0, inv_var = exp(-lv), scale = inv_var / n;
    const size_t base = (size_t)blockIdx.x * d;
    double sum = 0;
    for (size_t e = threadIdx.x; e < d; e += THREADS) {
        const double diff = (double)out[base + e] - (double)target[base + e];
        sum += recon_term(out[base + e], target[base + e], l1);
        if (dout) dout[base + e] = (float)(scale * (l1 ? (diff > 0) - (diff < 0) : 2.0 * diff));
    }
    sum = block_sum(sum);
    if (threadIdx.x == 0) loss[blockIdx.x] = (float)(sum * inv_var + (double)d * lv);
}

/* one block: sample after sample, so the total's order is fixed */
__global__ void recon_logvar_grad_kernel(float *dlogvar, const float *out, const float *target,
                                         const float *logvar, size_t d, int n, int l1) {
    const double inv_var = exp(-(logvar ? (double)*logvar : 0.0));
    double total = 0;
    for (int s = 0; s < n; s++) {
        double sum = 0;
        for (size_t e = threadIdx.x; e < d; e += THREADS)
            sum += recon_term(out[(size_t)s * d + e], target[(size_t)s * d + e], l1);
        total += (double)d - block_sum(sum) * inv_var;
    }
    if (threadIdx.x == 0) *dlogvar = (float)(total / n);
}

void cuda_recon_loss(float *loss, float *dout, float *dlogvar, const float *out,
                     const float *target, const float *logvar, int n, size_t d, int l1) {
    if (n <= 0) return;
    recon_loss_kernel<<<n, THREADS, 0, cuda.stream>>>(loss, dout, out, target, logvar, d, n, l1);
    cudaCheckLaunch();
    if (!dlogvar) return;
    recon_logvar_grad_kernel<<<1, THREADS, 0, cuda.stream>>>(dlogvar, out, target, logvar, d, n,
                                                            l1);
    cudaCheckLaunch();
}
