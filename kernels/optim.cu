/* Optimizer ops over the flat parameter buffers: the global gradient norm, AdamW and
 * the EMA of the weights, and the optimizer's control state (optimizer_control) that the
 * *_state variants read on the device, so a step never waits for the host.
 *
 * global_norm is a deterministic two-pass reduction: a fixed grid of NORM_BLOCKS
 * blocks (independent of the GPU) each sums the squares of a fixed strided share in
 * double into cuda.scratch, then one block adds the partials in a fixed order. AdamW
 * follows torch.optim.AdamW's order of operations, its scalars formed in double on
 * the host as Python forms them, exactly as the CPU backend does. */
#include "cuda_ops.cuh"

enum { NORM_BLOCKS = 1024 };

__global__ void sum_of_squares_kernel(double *partials, const float *g, size_t n) {
    double sum = 0;
    for (size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x; i < n;
         i += (size_t)NORM_BLOCKS * THREADS)
        sum += (double)g[i] * g[i];
    sum = block_sum(sum);
    if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

__global__ void norm_of_partials_kernel(float *out, const double *partials) {
    double sum = 0;
    for (int i = threadIdx.x; i < NORM_BLOCKS; i += THREADS) sum += partials[i];
    sum = block_sum(sum);
    if (threadIdx.x == 0) *out = (float)sqrt(sum);
}

void cuda_global_norm(float *out, const float *g, size_t n) {
    if (cuda.scratch_doubles < NORM_BLOCKS) die("cuda: scratch too small for global_norm");
    sum_of_squares_kernel<<<NORM_BLOCKS, THREADS, 0, cuda.stream>>>(cuda.scratch, g, n);
    cudaCheckLaunch();
    norm_of_partials_kernel<<<1, THREADS, 0, cuda.stream>>>(out, cuda.scratch);
    cudaCheckLaunch();
}

/* torch.optim.AdamW (_single_tensor_adamw, not amsgrad):
 *   p *= 1 - lr*wd;  m.lerp_(g, 1-b1);  v = v*b2 + (1-b2)*g*g;
 *   denom = sqrt(v)/sqrt(bias_c2) + eps;  p += -(lr/bias_c1) * m/denom
 * and, for mixed precision, the bf16 compute copy of p in the same pass. */
void cuda_adamw(float *p, float *p_bf16, const float *g, float *m, float *v, size_t n, float lr,
                float b1, float b2, float eps, float wd, float bias_c1, float bias_c2,
                float grad_scale) {
    const float decay = (float)(1.0 - (double)lr * wd);
    const float m_weight = (float)(1.0 - b1), v_weight = (float)(1.0 - b2);
    const float neg_step = (float)(-(double)lr / bias_c1);
    const float bias_c2_sqrt = (float)sqrt((double)bias_c2);
    launch_elementwise(n, [=] __device__(size_t i) {
        const float grad = g[i] * grad_scale;
        const float mi = m[i] + m_weight * (grad - m[i]);   /* lerp with weight < 0.5 */
        const float vi = v[i] * b2 + v_weight * grad * grad;
        const float denom = sqrtf(vi) / bias_c2_sqrt + eps;
        m[i] = mi;
        v[i] = vi;
        const float pi = p[i] * decay + neg_step * (mi / denom);
        p[i] = pi;
        if (p_bf16) p_bf16[i] = bf16_round_device(pi);
    });
}

void cuda_ema_update(float *ema, const float *p, size_t n, float decay) {
    const float keep = 1.0f - decay;
    launch_elementwise(n, [=] __device__(size_t i) { ema[i] = decay * ema[i] + keep * p[i]; });
}

/* ---- the control state: one block scans the losses, thread 0 does the scalar logic ---- */

__device__ static int loss_nonfinite(const float *stats, const OptimControl &c, int first,
                                     int stride) {
    for (int block = 0; block < c.blocks; block++)
        for (int kind = 0; kind < 32; kind++) {
            if (!(c.loss_kinds >> kind & 1u)) continue;
            const float *values = stats + (size_t)block * c.block_stride + (size_t)kind * c.per_kind;
            for (int i = first; i < c.per_kind; i += stride)
                if (!isfinite(values[i])) return 1;
        }
    return 0;
}

/* The same double arithmetic as cpu_optimizer_control; +, -, *, / and the conversions are
 * IEEE-exact on both, pow is CUDA's (within 2 ulp in double, before the rounding to float). */
__global__ void optimizer_control_kernel(OptimState *state, const float *grad_norm,
                                         const float *stats, OptimControl c) {
    const int nonfinite = __syncthreads_or(loss_nonfinite(stats, c, threadIdx.x, blockDim.x));
    if (threadIdx.x != 0) return;
    const int64_t step = state->step;
    const float norm = *grad_norm;
    state->faulted = c.fault_step >= 0 && step >= c.fault_step;
    state->skip = state->faulted || !isfinite(norm) || nonfinite;
    state->grad_norm = norm;
    const double ramp = c.warmup > 0 ? (double)(state->adam_steps + 1) / c.warmup : 1;
    state->lr_reported = c.lr * (ramp < 1 ? ramp : 1);
    if (state->skip) {
        state->skipped_steps++;
    } else {
        const int64_t t = ++state->adam_steps;
        const double scale = c.grad_clip > 0 ? c.grad_clip / ((double)norm + 1e-6) : 1.0;
        state->lr = (float)state->lr_reported;
        state->grad_scale = (float)(scale > 1 ? 1 : scale);
        state->bias_c1 = (float)(1 - pow(c.beta1, (double)t));
        state->bias_c2 = (float)(1 - pow(c.beta2, (double)t));
    }
    state->step = step + 1;
}

void cuda_optimizer_control(OptimState *state, const float *grad_norm, const float *stats,
                            OptimControl control) {
    optimizer_control_kernel<<<1, THREADS, 0, cuda.stream>>>(state, grad_norm, stats, control);
    cudaCheckLaunch();
}

/* cuda_adamw with the scalars read from the state on the device, formed as the host forms
 * them (double, then float). */
void cuda_adamw_state(float *p, float *p_bf16, const float *g, float *m, float *v, size_t n,
                      const OptimState *state, float b1, float b2, float eps, float wd) {
    const float m_weight = (float)(1.0 - b1), v_weight = (float)(1.0 - b2);
    launch_elementwise(n, [=] __device__(size_t i) {
        if (state->skip) {   /* p stays; its bf16 copy still mirrors it */
            if (p_bf16) p_bf16[i] = bf16_round_device(p[i]);
            return;
        }
        const float lr = state->lr, grad_scale = state->grad_scale;
        const float decay = (float)(1.0 - (double)lr * wd);
        const float neg_step = (float)(-(double)lr / state->bias_c1);
        const float bias_c2_sqrt = (float)sqrt((double)state->bias_c2);
        const float grad = g[i] * grad_scale;
        const float mi = m[i] + m_weight * (grad - m[i]);
        const float vi = v[i] * b2 + v_weight * grad * grad;
        const float denom = sqrtf(vi) / bias_c2_sqrt + eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay + neg_step * (mi / denom);
        if (p_bf16) p_bf16[i] = bf16_round_device(p[i]);
    });
}

void cuda_ema_update_state(float *ema, const float *p, size_t n, const OptimState *state,
                           float decay) {
    const float keep = 1.0f - decay;
    launch_elementwise(n, [=] __device__(size_t i) {
        if (!state->skip) ema[i] = decay * ema[i] + keep * p[i];
    });
}
