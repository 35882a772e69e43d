/* Times one ancestral sampling step (the denoiser's model call + fused update) at batch_size,
 * on a random x_t, and prints one JSON line with the median and the implied time
 * for the full chain of `timesteps` steps. Usage as bench_train. A class-conditional config
 * (num_class_embeds > 0) samples classes 0, 1, ... through classifier-free guidance at
 * --guidance-scale S (1: the conditional model alone; otherwise a doubled batch). */
#include <time.h>

#include "bench_common.h"
#include "denoiser.h"
#include "diffusion.h"
#include "guidance.h"
#include "unet.h"

/* CPU time of the whole process (all threads): on a shared machine the wall time of a step
 * depends on the other jobs, its CPU time much less. */
static double process_cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    BenchArgs a = bench_parse(argc, argv);
    const Config *c = &a.cfg;
    char err[512];
    GaussianDiffusion d;
    if (diffusion_from_config(&d, c, err, sizeof err) != 0) die("%s", err);
    int B = c->batch_size;
    float scale = (float)a.guidance_scale;
    int conditional = c->num_class_embeds > 0, doubled = conditional && scale != 0 && scale != 1;
    Net *m = unet_build(a.be, c, doubled ? 2 * B : B, 0);
    net_init_weights(m, c->seed, NULL);
    NetDenoiser den;
    ModelOutput output = {.prediction = d.pred, .learned_var = c->learn_sigma,
                          .channels = c->in_channels};
    net_denoiser_init(&den, m, NULL, output);
    Denoiser *model = &den.base;
    GuidedDenoiser guided = {0};
    int32_t *labels = xmalloc((size_t)B * sizeof(int32_t));
    for (int i = 0; i < B; i++) labels[i] = conditional ? i % config_num_classes(c) : 0;
    if (conditional) {
        if (guided_denoiser_init(&guided, model, scale, config_null_class(c), err, sizeof err))
            die("%s", err);
        model = &guided.base;
        model->labels = labels;
    }
    size_t D = den.base.sample_size;
    float *x = a.be->alloc((size_t)B * D * sizeof(float));
    a.be->normal_fill(x, B, D, (RngKey){c->seed, RNG_STREAM_SAMPLE_XT, 0, 0});
    double *ms = xmalloc((size_t)a.iters * sizeof(double));
    double *cpu_ms = xmalloc((size_t)a.iters * sizeof(double));
    for (int i = 0; i < a.warmup + a.iters; i++) {
        int t = c->timesteps - 1 - i % c->timesteps;
        double start = now_seconds(), cpu_start = process_cpu_seconds();
        const float *out = model->predict(model, x, B, (float)t);
        a.be->sample_update(x, out, B, D, p_sample_update(&d, t, 1),
                            (RngKey){c->seed, RNG_STREAM_SAMPLE_Z, (uint32_t)t, 0});
        a.be->synchronize();
        if (i >= a.warmup) {
            ms[i - a.warmup] = (now_seconds() - start) * 1e3;
            cpu_ms[i - a.warmup] = (process_cpu_seconds() - cpu_start) * 1e3;
        }
    }
    double median = bench_median(ms, a.iters), cpu_median = bench_median(cpu_ms, a.iters);
    printf("{\"engine\": \"ddpm.c\", \"mode\": \"sample\", \"backend\": \"%s\", \"batch\": %d, "
           "\"image_size\": %d, \"ch\": %d, \"guidance_scale\": %g, \"forward_batch\": %d, "
           "\"ms_per_step\": %.3f, \"cpu_ms_per_step\": %.3f, "
           "\"img_per_s_full_chain\": %.4f}\n",
           a.be->name, B, c->image_size, c->ch, conditional ? scale : 1.0, doubled ? 2 * B : B,
           median, cpu_median, B / (median * c->timesteps / 1e3));
    free(ms);
    free(cpu_ms);
    free(labels);
    if (conditional) guided_denoiser_free(&guided);
    a.be->release(x);
    net_denoiser_free(&den);
    net_free(m);
    diffusion_free(&d);
    return 0;
}
