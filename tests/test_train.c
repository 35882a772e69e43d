/* Training works: the tiny config trains 300 steps on a slice of real
 * Fashion-MNIST, and the loss falls below a stated bound; sampling from the EMA
 * weights then gives finite images inside [-1, 1] that are not constant. */
#include <stdlib.h>
#include <string.h>

#include "sample.h"
#include "testing.h"
#include "train.h"
#include "util.h"

/* The mean L_simple over the last 50 of 300 steps must fall below this. A model
 * that predicts eps = 0 scores 1.0; the run measured about 0.06 when this was set. */
#define LOSS_BOUND 0.10
#define STEPS 300
/* Under the sanitizers (DDPM_SANITIZE=1, the second pass of `make test`), which look
 * for memory errors and undefined behaviour rather than for learning, and run the step
 * about twice as slowly: 60 steps, whose last 10 must average below half the first 10
 * (about 0.1 of it measured), and samples from 50 respaced steps instead of 1000. The
 * bound above is checked by the plain pass. */
#define SANITIZE_STEPS 60

static Config tiny_config(void) {
    Config cfg;
    char err[512];
    config_defaults(&cfg);
    if (config_load_file(&cfg, "configs/tiny", err, sizeof err) != 0) die("%s", err);
    if (config_validate(&cfg, err, sizeof err) != 0) die("%s", err);
    return cfg;
}

/* spacing: NULL for every timestep (the training-time sampler), or a respacing. */
static void check_samples(Trainer *tr, const char *spacing) {
    Net *m = tr->model;
    int n = 4;
    size_t D = net_per_sample(m, net_input(m, "sample"));
    float *images = xmalloc((size_t)n * D * sizeof(float));
    SamplerOptions opt = {.kind = SAMPLER_ANCESTRAL, .spacing = spacing, .clip_denoised = 1};
    GaussianDiffusion d;
    char err[256];
    if (diffusion_from_config(&d, &tr->cfg, err, sizeof err) != 0) die("%s", err);
    ModelOutput output = {.prediction = d.pred, .channels = tr->cfg.in_channels};
    NetDenoiser den;
    net_denoiser_init(&den, m, tr->ema, output);
    SamplerPlan plan;
    if (sampler_plan_init(&plan, &d, &opt, &output, err, sizeof err) != 0) die("%s", err);
    sample_images(&den.base, &plan, n, 7, NULL, NULL, images, 0);
    sampler_plan_free(&plan);
    net_denoiser_free(&den);
    diffusion_free(&d);
    int finite = 1, in_range = 1;
    double sum = 0, sum_sq = 0;
    for (size_t i = 0; i < n * D; i++) {
        finite &= isfinite(images[i]) != 0;
        in_range &= images[i] >= -1.0f && images[i] <= 1.0f;
        sum += images[i];
        sum_sq += (double)images[i] * images[i];
    }
    double mean = sum / (n * D), std = sqrt(sum_sq / (n * D) - mean * mean);
    printf("  samples: mean %.3f, std %.3f\n", mean, std);
    CHECK(finite, "samples are finite");
    CHECK(in_range, "samples lie in [-1, 1]");
    CHECK(std > 0.2, "samples are not constant (std %.3f)", std);
    free(images);
}

int main(void) {
    Config cfg = tiny_config();
    Dataset data;
    char err[1024];
    if (dataset_load_idx(&data, cfg.data_path, cfg.image_size, cfg.data_limit, err, sizeof err))
        die("%s", err);
    Trainer tr;
    trainer_init(&tr, backend_cpu(), &cfg, &data, NULL);
    const int sanitized = getenv("DDPM_SANITIZE") != NULL;
    const int steps = sanitized ? SANITIZE_STEPS : STEPS, tail = sanitized ? 10 : 50;
    double first = 0, last = 0;
    int skipped = 0;
    for (int step = 0; step < steps; step++) {
        StepResult r = trainer_step(&tr);
        skipped += r.skipped;
        if (step < 10) first += r.loss / 10;
        if (step >= steps - tail) last += r.loss / tail;
    }
    printf("  mean loss: first 10 steps %.4f, last %d of %d steps %.4f\n", first, tail, steps,
           last);
    CHECK(skipped == 0, "%d steps skipped", skipped);
    if (sanitized) {
        CHECK(last < 0.5 * first, "loss fell only from %.4f to %.4f", first, last);
    } else {
        CHECK(last < LOSS_BOUND, "loss %.4f not below %.2f", last, LOSS_BOUND);
        CHECK(last < 0.2 * first, "loss fell only from %.4f to %.4f", first, last);
    }
    CHECK(tr.progress.step == steps && tr.progress.adam_steps == steps, "step counters");
    check_samples(&tr, sanitized ? "50" : NULL);
    trainer_free(&tr);
    return test_summary("train");
}
