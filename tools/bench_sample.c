/* Times one ancestral sampling step (the denoiser's model call + fused update) at batch_size,
 * on a random x_t, and prints one JSON line with the median and the implied time
 * for the full chain of `timesteps` steps. Usage as bench_train. */
#include "bench_common.h"
#include "denoiser.h"
#include "diffusion.h"
#include "unet.h"

int main(int argc, char **argv) {
    BenchArgs a = bench_parse(argc, argv);
    const Config *c = &a.cfg;
    char err[512];
    GaussianDiffusion d;
    if (diffusion_from_config(&d, c, err, sizeof err) != 0) die("%s", err);
    int B = c->batch_size;
    Net *m = unet_build(a.be, c, B, 0);
    net_init_weights(m, c->seed, NULL);
    NetDenoiser den;
    ModelOutput output = {.prediction = d.pred, .learned_var = c->learn_sigma,
                          .channels = c->in_channels};
    net_denoiser_init(&den, m, NULL, output);
    size_t D = den.base.sample_size;
    float *x = a.be->alloc((size_t)B * D * sizeof(float));
    a.be->normal_fill(x, B, D, (RngKey){c->seed, RNG_STREAM_SAMPLE_XT, 0, 0});
    double *ms = xmalloc((size_t)a.iters * sizeof(double));
    for (int i = 0; i < a.warmup + a.iters; i++) {
        int t = c->timesteps - 1 - i % c->timesteps;
        double start = now_seconds();
        const float *out = den.base.predict(&den.base, x, B, (float)t);
        a.be->sample_update(x, out, B, D, p_sample_update(&d, t, 1),
                            (RngKey){c->seed, RNG_STREAM_SAMPLE_Z, (uint32_t)t, 0});
        a.be->synchronize();
        if (i >= a.warmup) ms[i - a.warmup] = (now_seconds() - start) * 1e3;
    }
    double median = bench_median(ms, a.iters);
    printf("{\"engine\": \"ddpm.c\", \"mode\": \"sample\", \"backend\": \"%s\", \"batch\": %d, "
           "\"image_size\": %d, \"ch\": %d, \"ms_per_step\": %.3f, \"img_per_s_full_chain\": %.4f}\n",
           a.be->name, B, c->image_size, c->ch, median, B / (median * c->timesteps / 1e3));
    free(ms);
    a.be->release(x);
    net_denoiser_free(&den);
    net_free(m);
    diffusion_free(&d);
    return 0;
}
