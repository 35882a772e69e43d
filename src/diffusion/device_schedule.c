/* Uploads float copies of the per-timestep arrays that backend ops gather by t. */
#include <math.h>
#include <stdlib.h>

#include "diffusion.h"
#include "util.h"

static float *upload(const Backend *be, const double *values, int n) {
    float *host = xmalloc((size_t)n * sizeof(float));
    for (int i = 0; i < n; i++) host[i] = (float)values[i];
    float *dev = be->alloc((size_t)n * sizeof(float));
    be->to_device(dev, host, (size_t)n * sizeof(float));
    free(host);
    return dev;
}

void device_schedule_init(DeviceSchedule *s, const Backend *be, const GaussianDiffusion *d) {
    int T = d->num_timesteps;
    double *a = xmalloc((size_t)T * sizeof(double)), *b = xmalloc((size_t)T * sizeof(double));
    double *log_var_range = xmalloc((size_t)T * sizeof(double));
    double *fixed = xmalloc((size_t)T * sizeof(double));
    for (int t = 0; t < T; t++) {
        xstart_coefficients(d, t, &a[t], &b[t]);
        log_var_range[t] = log(d->betas[t]) - d->posterior_log_variance_clipped[t];
        fixed[t] = model_log_variance(d, t);
    }
    s->be = be;
    s->sqrt_ac = upload(be, d->sqrt_alphas_cumprod, T);
    s->sqrt_1m_ac = upload(be, d->sqrt_one_minus_alphas_cumprod, T);
    const double *sources[7] = {a, b, d->posterior_mean_coef1, d->posterior_mean_coef2,
                                d->posterior_log_variance_clipped, log_var_range, fixed};
    for (int i = 0; i < 7; i++) s->owned[i] = upload(be, sources[i], T);
    s->tables = (DiffusionTables){s->owned[0], s->owned[1], s->owned[2], s->owned[3],
                                  s->owned[4], s->owned[5], s->owned[6]};
    free(a);
    free(b);
    free(log_var_range);
    free(fixed);
}

void device_schedule_free(DeviceSchedule *s) {
    s->be->release(s->sqrt_ac);
    s->be->release(s->sqrt_1m_ac);
    for (int i = 0; i < 7; i++) s->be->release(s->owned[i]);
}
