/* Times one ancestral sampling step (model forward + fused update) at batch_size,
 * on a random x_t, and prints one JSON line with the median and the implied time
 * for the full chain of `timesteps` steps. Usage as bench_train. */
#include "bench_common.h"
#include "diffusion.h"
#include "unet.h"

int main(int argc, char **argv) {
    BenchArgs a = bench_parse(argc, argv);
    const Config *c = &a.cfg;
    char err[512];
    GaussianDiffusion d;
    if (diffusion_init(&d, c->beta_schedule, c->timesteps, prediction_from_name(c->prediction),
                       variance_from_name(c->variance), err, sizeof err) != 0)
        die("%s", err);
    int B = c->batch_size;
    UNet *m = unet_create(a.be, c, B);
    unet_init_weights(m, c->seed, NULL);
    m->training = 0;
    size_t D = unet_sample_size(m);
    a.be->normal_fill(unet_input(m), B, D, (RngKey){c->seed, RNG_STREAM_SAMPLE_XT, 0, 0});
    int32_t *t_host = xmalloc((size_t)B * sizeof(int32_t));
    double *ms = xmalloc((size_t)a.iters * sizeof(double));
    for (int i = 0; i < a.warmup + a.iters; i++) {
        int t = c->timesteps - 1 - i % c->timesteps;
        double start = now_seconds();
        for (int j = 0; j < B; j++) t_host[j] = t;
        unet_set_timesteps(m, t_host, B);
        unet_forward(m, B, (RngKey){0});
        a.be->sample_update(unet_input(m), unet_output(m), B, D, p_sample_update(&d, t, 1),
                            (RngKey){c->seed, RNG_STREAM_SAMPLE_Z, (uint32_t)t, 0});
        a.be->synchronize();
        if (i >= a.warmup) ms[i - a.warmup] = (now_seconds() - start) * 1e3;
    }
    double median = bench_median(ms, a.iters);
    printf("{\"engine\": \"ddpm.c\", \"mode\": \"sample\", \"backend\": \"%s\", \"batch\": %d, "
           "\"image_size\": %d, \"ch\": %d, \"ms_per_step\": %.3f, \"img_per_s_full_chain\": %.4f}\n",
           a.be->name, B, c->image_size, c->ch, median, B / (median * c->timesteps / 1e3));
    free(ms);
    free(t_host);
    unet_free(m);
    diffusion_free(&d);
    return 0;
}
