/* The training step and the sampling loop are capturable: after warm-up, they neither wait
 * for the device, nor copy to the host synchronously, nor allocate (backend, pinned or host
 * memory), nor search convolution algorithms (capture_check.h, on the CPU backend). Checked
 * for trainer_enqueue_step with every objective (DDPM with L_simple, and with learned
 * variances, the hybrid loss and the importance sampler; flow matching; the noisy
 * classifier; the KL autoencoder) and for whole ancestral and DDIM loops on backend tables,
 * which must also give the host-driven loop's bytes. Work that does one of those things
 * fails the check, so the check can fail: the whole trainer_step (it waits for its
 * statistics), the host logic the optimizer used to have (it read the gradient norm with
 * to_host) and a sampling loop that reads its image. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "capture_check.h"
#include "denoiser.h"
#include "sample.h"
#include "testing.h"
#include "train.h"
#include "util.h"

enum { WARMUP_STEPS = 2, CHECKED_STEPS = 3 };

/* The runs checked: a base config and key=value assignments on it (as on the command line). */
typedef struct {
    const char *what, *config;
    const char *set[12];
    int samples;   /* an ancestral/DDIM sampler applies */
} CheckedRun;

static const CheckedRun RUNS[] = {
    {"the tiny config", "configs/tiny", {"batch_size=8"}, 1},
    {"learned variances, hybrid loss, importance sampling", "configs/tiny",
     {"batch_size=8", "learn_sigma=true", "out_channels=2", "loss=hybrid",
      "timestep_sampler=loss_second_moment"},
     1},
    {"flow matching", "configs/tiny",
     {"batch_size=8", "objective=flow", "timestep_sampler=logit_normal"}, 0},
    {"the noisy classifier", "configs/tiny",
     {"batch_size=8", "objective=classifier", "num_classes=10"}, 0},
    {"the KL autoencoder", "configs/fashion_vae_cpu",
     {"ch=8", "ch_mult=[1,2]", "num_res_blocks=1", "groups=4", "latent_channels=2",
      "data_limit=64", "batch_size=8", "learn_logvar=true"},
     0},
};

static Config run_config(const CheckedRun *run) {
    Config cfg;
    char err[512];
    config_defaults(&cfg);
    if (config_load_file(&cfg, run->config, err, sizeof err) != 0) die("%s", err);
    for (int i = 0; run->set[i]; i++)
        if (config_set(&cfg, run->set[i], err, sizeof err) != 0) die("%s: %s", run->set[i], err);
    if (config_validate(&cfg, err, sizeof err) != 0) die("%s", err);
    return cfg;
}

static void expect_capturable(CaptureReport r, const char *what) {
    CHECK(r.forbidden_calls == 0, "%s: %d forbidden calls, the first %s", what, r.forbidden_calls,
          r.first_forbidden);
    CHECK(r.host_allocations == 0, "%s: %ld host allocations", what, r.host_allocations);
}

static void expect_rejected(CaptureReport r, const char *what, const char *op) {
    CHECK(r.forbidden_calls > 0 && strcmp(r.first_forbidden, op) == 0,
          "%s: %d forbidden calls, the first \"%s\" (want %s)", what, r.forbidden_calls,
          r.first_forbidden, op);
}

static void check_training(Trainer *tr) {
    for (int i = 0; i < WARMUP_STEPS; i++) trainer_step(tr);
    for (int i = 0; i < CHECKED_STEPS; i++) {
        capture_check_begin();
        trainer_enqueue_step(tr);
        expect_capturable(capture_check_end(), "trainer_enqueue_step");
        StepResult r = trainer_collect_step(tr);
        CHECK(!r.skipped && isfinite(r.loss), "step %ld: loss %g, skipped %d",
              tr->progress.step - 1, r.loss, r.skipped);
    }
    capture_check_begin();
    trainer_step(tr);
    expect_rejected(capture_check_end(), "trainer_step (enqueue and collect)", "wait_host_copies");

    /* the old optimizer: the host read the gradient norm to decide the skip and the clip */
    capture_check_begin();
    trainer_enqueue_gradients(tr);
    float norm;
    tr->be->to_host(&norm, tr->grad_norm, sizeof norm);
    expect_rejected(capture_check_end(), "a step that reads the gradient norm", "to_host");
}

/* The sampling loop on the plan's backend tables: after one warm-up run (which builds the
 * tables), a whole run of a respaced ancestral or DDIM plan passes the check, and gives the
 * same bytes as the host-driven loop (a denoiser without predict_at). */
static void check_sampling(Trainer *tr, SamplerKind kind) {
    const Backend *be = tr->be;
    GaussianDiffusion d;
    char err[256];
    if (diffusion_from_config(&d, &tr->cfg, err, sizeof err) != 0) die("%s", err);
    ModelOutput output = {.prediction = d.pred, .learned_var = tr->cfg.learn_sigma,
                          .channels = tr->cfg.in_channels};
    NetDenoiser den;
    net_denoiser_init(&den, tr->model, tr->ema, output);
    NetDenoiser host_driven = den;   /* shares den's buffers; freed once, with den */
    host_driven.base.predict_at = NULL;
    SamplerOptions opt = {.kind = kind, .spacing = "12", .eta = 0.5, .clip_denoised = 1};
    SamplerPlan plan;
    if (sampler_plan_init(&plan, &d, &opt, &output, err, sizeof err) != 0) die("%s", err);
    const int n = 4;
    const size_t bytes = (size_t)n * den.base.sample_size * sizeof(float);
    float *x = be->alloc(bytes), *x_T = be->alloc(bytes);
    float *on_device = xmalloc(bytes), *on_host = xmalloc(bytes);
    be->normal_fill(x_T, n, den.base.sample_size, (RngKey){1, RNG_STREAM_SAMPLE_XT, 0, 0});
    const RngKey z_key = {1, RNG_STREAM_SAMPLE_Z, 0, 0};
    be->copy(x, x_T, bytes);
    sampler_run(&plan, &den.base, x, n, z_key, 0);   /* warm-up: builds the tables */
    be->copy(x, x_T, bytes);
    capture_check_begin();
    sampler_run(&plan, &den.base, x, n, z_key, 0);
    expect_capturable(capture_check_end(), kind == SAMPLER_DDIM ? "DDIM loop" : "ancestral loop");
    be->to_host(on_device, x, bytes);
    be->copy(x, x_T, bytes);
    sampler_run(&plan, &host_driven.base, x, n, z_key, 0);
    be->to_host(on_host, x, bytes);
    CHECK(memcmp(on_device, on_host, bytes) == 0,
          "the loop on backend tables differs from the host-driven loop");

    capture_check_begin();   /* the host-driven loop is capturable too, but not if it reads */
    sampler_run(&plan, &host_driven.base, x, n, z_key, 0);
    be->to_host(on_host, x, sizeof(float));
    expect_rejected(capture_check_end(), "a sampling loop that reads its image", "to_host");
    be->release(x);
    be->release(x_T);
    free(on_device);
    free(on_host);
    sampler_plan_free(&plan);
    net_denoiser_free(&den);
    diffusion_free(&d);
}

int main(void) {
    for (size_t k = 0; k < sizeof RUNS / sizeof RUNS[0]; k++) {
        printf("  %s\n", RUNS[k].what);
        Config cfg = run_config(&RUNS[k]);
        Dataset data;
        char err[1024];
        if (dataset_load_idx(&data, cfg.data_path, cfg.image_size, cfg.data_limit, err,
                             sizeof err))
            die("%s", err);
        Trainer tr;
        trainer_init(&tr, capture_check_backend(backend_cpu()), &cfg, &data, NULL);
        CHECK(strcmp(tr.be->name, "capture-check") == 0, "the trainer runs on the checker");
        check_training(&tr);
        if (RUNS[k].samples) {
            check_sampling(&tr, SAMPLER_ANCESTRAL);
            check_sampling(&tr, SAMPLER_DDIM);
        }
        trainer_free(&tr);
    }
    return test_summary("capture");
}
