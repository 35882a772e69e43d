/* Uniform and loss-second-moment timestep sampling (see timestep_sampler.h). */
#include "timestep_sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void timestep_sampler_init(TimestepSampler *s, int T, int importance) {
    s->num_timesteps = T;
    s->importance = importance;
    s->history = xcalloc((size_t)T * LOSS_HISTORY, sizeof(double));
    s->count = xcalloc((size_t)T, sizeof(int32_t));
    s->cdf = xcalloc((size_t)T, sizeof(double));
    s->probs = xcalloc((size_t)T, sizeof(double));
}

void timestep_sampler_free(TimestepSampler *s) {
    free(s->history);
    free(s->count);
    free(s->cdf);
    free(s->probs);
    memset(s, 0, sizeof *s);
}

static int warmed_up(const TimestepSampler *s) {
    for (int t = 0; t < s->num_timesteps; t++)
        if (s->count[t] < LOSS_HISTORY) return 0;
    return 1;
}

void timestep_sampler_probs(const TimestepSampler *s, double *probs) {
    int T = s->num_timesteps;
    if (!s->importance || !warmed_up(s)) {
        for (int t = 0; t < T; t++) probs[t] = 1.0 / T;
        return;
    }
    double total = 0;
    for (int t = 0; t < T; t++) {
        double sq = 0;
        for (int k = 0; k < LOSS_HISTORY; k++) {
            double l = s->history[(size_t)t * LOSS_HISTORY + k];
            sq += l * l;
        }
        probs[t] = sqrt(sq / LOSS_HISTORY);
        total += probs[t];
    }
    for (int t = 0; t < T; t++) probs[t] = probs[t] / total * (1 - 0.001) + 0.001 / T;
}

void timestep_sampler_draw(const TimestepSampler *s, RngKey key, int n, int32_t *t,
                           float *weight) {
    int T = s->num_timesteps;
    if (!s->importance) {   /* the plain path draws an integer directly */
        for (int i = 0; i < n; i++) {
            t[i] = (int32_t)philox_below(key, (uint32_t)i, 0, (uint32_t)T);
            weight[i] = 1.0f;
        }
        return;
    }
    double *cdf = s->cdf, *probs = s->probs;
    timestep_sampler_probs(s, cdf);
    memcpy(probs, cdf, (size_t)T * sizeof(double));
    for (int k = 1; k < T; k++) cdf[k] += cdf[k - 1];
    for (int i = 0; i < n; i++) {
        double u = philox_uniform(key, (uint32_t)i, 0) * cdf[T - 1];
        int lo = 0, hi = T - 1;
        while (lo < hi) {   /* first k with cdf[k] > u */
            int mid = (lo + hi) / 2;
            if (cdf[mid] > u) hi = mid;
            else lo = mid + 1;
        }
        t[i] = lo;
        weight[i] = (float)(1.0 / (T * probs[lo]));
    }
}

void timestep_sampler_update(TimestepSampler *s, const int32_t *t, const float *losses, int n) {
    if (!s->importance) return;
    for (int i = 0; i < n; i++) {
        double *h = s->history + (size_t)t[i] * LOSS_HISTORY;
        if (s->count[t[i]] == LOSS_HISTORY) {
            memmove(h, h + 1, (LOSS_HISTORY - 1) * sizeof(double));
            h[LOSS_HISTORY - 1] = losses[i];
        } else {
            h[s->count[t[i]]++] = losses[i];
        }
    }
}
