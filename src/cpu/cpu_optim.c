/* Optimizer ops of the CPU backend over flat parameter buffers: the gradient norm
 * for clipping, AdamW with PyTorch's order of operations, the EMA of weights, and the
 * optimizer's control state (skip, clipping, warmup, bias corrections) that the
 * *_state variants read, so that a step's control flow stays in backend memory.
 * The norm is a fixed-order blocked sum, so it does not change with the number of
 * threads. */
#include <math.h>

#include "bf16.h"
#include "cpu_backend.h"

enum {
    PARALLEL_MIN = 1 << 15,     /* elements below which one thread is faster */
    NORM_CHUNK = 1 << 16,       /* elements per partial sum of global_norm */
    NORM_LANES = 8,             /* independent accumulators, so the sum vectorizes */
};

/* Sum of squares in double over a fixed lane split, then lanes in order. */
static double sum_of_squares(const float *g, size_t n) {
    double lanes[NORM_LANES] = {0};
    size_t i = 0;
    for (; i + NORM_LANES <= n; i += NORM_LANES)
        for (int k = 0; k < NORM_LANES; k++) lanes[k] += (double)g[i + k] * g[i + k];
    double total = 0;
    for (; i < n; i++) total += (double)g[i] * g[i];
    for (int k = 0; k < NORM_LANES; k++) total += lanes[k];
    return total;
}

void cpu_global_norm(float *out, const float *g, size_t n) {
    size_t chunks = (n + NORM_CHUNK - 1) / NORM_CHUNK;
    static CpuScratch kept;   /* the partial sums, kept between calls */
    double *partial = cpu_scratch(&kept, (chunks ? chunks : 1) * sizeof(double));
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (size_t k = 0; k < chunks; k++) {
        size_t start = k * NORM_CHUNK, len = n - start < NORM_CHUNK ? n - start : NORM_CHUNK;
        partial[k] = sum_of_squares(g + start, len);
    }
    double total = 0;
    for (size_t k = 0; k < chunks; k++) total += partial[k];
    *out = (float)sqrt(total);
}

/* torch.optim.AdamW (_single_tensor_adamw, not amsgrad): scalars are formed in
 * double as Python does, then applied in float:
 *   p *= 1 - lr*wd;  m.lerp_(g, 1-b1);  v = v*b2 + (1-b2)*g*g;
 *   denom = sqrt(v)/sqrt(bias_c2) + eps;  p += -(lr/bias_c1) * m/denom
 * and, for mixed precision, the bf16 compute copy of p in the same pass. */
void cpu_adamw(float *p, float *p_bf16, const float *g, float *m, float *v, size_t n, float lr,
               float b1, float b2, float eps, float wd, float bias_c1, float bias_c2,
               float grad_scale) {
    float decay = (float)(1.0 - (double)lr * wd);
    float m_weight = (float)(1.0 - b1), v_weight = (float)(1.0 - b2);
    float neg_step = (float)(-(double)lr / bias_c1);
    float bias_c2_sqrt = (float)sqrt((double)bias_c2);
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) {
        float grad = g[i] * grad_scale;
        p[i] *= decay;
        m[i] += m_weight * (grad - m[i]);   /* lerp with weight < 0.5, as ATen forms it */
        v[i] = v[i] * b2 + v_weight * grad * grad;
        float denom = sqrtf(v[i]) / bias_c2_sqrt + eps;
        p[i] += neg_step * (m[i] / denom);
        if (p_bf16) p_bf16[i] = bf16_round(p[i]);
    }
}

void cpu_ema_update(float *ema, const float *p, size_t n, float decay) {
    float keep = 1.0f - decay;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) ema[i] = decay * ema[i] + keep * p[i];
}

static int any_loss_nonfinite(const float *stats, const OptimControl *c) {
    for (int block = 0; block < c->blocks; block++)
        for (int kind = 0; kind < 32; kind++) {
            if (!(c->loss_kinds >> kind & 1u)) continue;
            const float *values = stats + (size_t)block * c->block_stride + (size_t)kind * c->per_kind;
            for (int i = 0; i < c->per_kind; i++)
                if (!isfinite(values[i])) return 1;
        }
    return 0;
}

/* The host logic it replaces (train.c's learning_rate and adamw_step), formed the same way
 * in double, so that every scalar is bit for bit what the host computed. */
void cpu_optimizer_control(OptimState *state, const float *grad_norm, const float *stats,
                           OptimControl control) {
    const int64_t step = state->step;
    const float norm = *grad_norm;
    state->faulted = control.fault_step >= 0 && step >= control.fault_step;
    state->skip = state->faulted || !isfinite(norm) || any_loss_nonfinite(stats, &control);
    state->grad_norm = norm;
    double ramp = control.warmup > 0 ? (double)(state->adam_steps + 1) / control.warmup : 1;
    state->lr_reported = control.lr * (ramp < 1 ? ramp : 1);
    if (state->skip) {
        state->skipped_steps++;
    } else {
        const int64_t t = ++state->adam_steps;
        double scale = control.grad_clip > 0 ? control.grad_clip / ((double)norm + 1e-6) : 1.0;
        state->lr = (float)state->lr_reported;
        state->grad_scale = (float)(scale > 1 ? 1 : scale);
        state->bias_c1 = (float)(1 - pow(control.beta1, (double)t));
        state->bias_c2 = (float)(1 - pow(control.beta2, (double)t));
    }
    state->step = step + 1;
}

void cpu_adamw_state(float *p, float *p_bf16, const float *g, float *m, float *v, size_t n,
                     const OptimState *state, float b1, float b2, float eps, float wd) {
    if (!state->skip) {
        cpu_adamw(p, p_bf16, g, m, v, n, state->lr, b1, b2, eps, wd, state->bias_c1,
                  state->bias_c2, state->grad_scale);
        return;
    }
    if (!p_bf16) return;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) p_bf16[i] = bf16_round(p[i]);
}

void cpu_ema_update_state(float *ema, const float *p, size_t n, const OptimState *state,
                          float decay) {
    if (!state->skip) cpu_ema_update(ema, p, n, decay);
}
