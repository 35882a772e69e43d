/* Times one ancestral sampling step (the denoiser's model call + fused update) at batch_size,
 * on a random x_t, and prints one JSON line: p10/p50/p90 of the step, the implied time for
 * the full chain of `timesteps` steps, the FLOP rate (the forward's multiply-adds x 2, the
 * yardstick's count) against the machine's SGEMM peak (CPU), and a profile by category of
 * op (bench_train's, with the sampling update timed on its own). Usage as bench_train. A class-conditional config
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
    prefer_passive_omp_wait(argv);
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
    BenchSpread step = bench_spread(ms, a.iters);
    double cpu_median = bench_median(cpu_ms, a.iters);
    const int cpu = strcmp(a.be->name, "cpu") == 0, forward_batch = doubled ? 2 * B : B;
    const double flops_per_image = net_forward_flops(m) * forward_batch / B;
    const double gflops = flops_per_image * B / step.p50 / 1e6;
    const double peak = cpu && a.sgemm_n ? bench_sgemm_peak_gflops(a.sgemm_n, 5) : 0;
    printf("{\"engine\": \"ddpm.c\", \"mode\": \"sample\", \"backend\": \"%s\", "
           "\"commit\": \"%s\", \"precision\": \"%s\", \"threads\": %d, \"blas_core\": \"%s\", \"batch\": %d, "
           "\"image_size\": %d, \"ch\": %d, \"guidance_scale\": %g, \"forward_batch\": %d, "
           "\"iters\": %d, \"p10_ms\": %.3f, \"p50_ms\": %.3f, \"p90_ms\": %.3f, "
           "\"ms_per_step\": %.3f, \"cpu_ms_per_step\": %.3f, \"img_per_s_full_chain\": %.4f, "
           "\"gflop_per_img\": %.3f, \"gflops\": %.1f",
           a.be->name, DDPM_COMMIT, bench_precision(&a), omp_get_max_threads(), openblas_get_corename(), B,
           c->image_size, c->ch, conditional ? scale : 1.0, forward_batch, a.iters, step.p10,
           step.p50, step.p90, step.p50, cpu_median, B / (step.p50 * c->timesteps / 1e3),
           flops_per_image / 1e9, gflops);
    if (peak > 0)
        printf(", \"sgemm_peak_gflops\": %.1f, \"peak_fraction\": %.3f", peak, gflops / peak);
    if (a.profile_steps) {
        Profile prof = {.be = a.be};
        m->profile = &prof;
        double update_ms = 0;
        for (int i = 0; i < a.profile_steps; i++) {
            int t = c->timesteps - 1 - i % c->timesteps;
            const float *out = model->predict(model, x, B, (float)t);
            double start = profile_begin(&prof);
            a.be->sample_update(x, out, B, D, p_sample_update(&d, t, 1),
                                (RngKey){c->seed, RNG_STREAM_SAMPLE_Z, (uint32_t)t, 0});
            a.be->synchronize();
            update_ms += (now_seconds() - start) * 1e3;
        }
        m->profile = NULL;
        bench_print_profile(&prof, a.profile_steps, "sample_update", update_ms / a.profile_steps);
    }
    printf("}\n");
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
