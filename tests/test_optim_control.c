/* The device-side optimizer control equals the host logic it replaced, bit for bit.
 *
 * Two trainers on the same tiny config train side by side: one with trainer_step (the
 * skip, clipping, warmup, Adam's step count and bias corrections decided by the
 * optimizer_control op in backend memory), one with a reference step that runs the same
 * forward and backward (trainer_enqueue_gradients) and then the host logic the trainer
 * had before: it reads the loss and the gradient norm, decides the skip and the learning
 * rate on the host and calls adamw_step and ema_update. After every step the reported
 * figures, the counters and the weights, EMA and Adam moments must be identical. The run
 * has warmup and clipping active, steps made non-finite by DDPM_FAULT_NONFINITE_FROM_STEP
 * (then cleared, so updates resume after skipped steps), and at the end a NaN planted in
 * the weights, which makes the loss and the gradient norm genuinely non-finite. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testing.h"
#include "train.h"
#include "util.h"

enum {
    FAULT_FROM = 5,        /* DDPM_FAULT_NONFINITE_FROM_STEP */
    FAULT_CLEARED = 8,     /* the hook is switched off before this step */
    NAN_PLANTED = 12,      /* a weight becomes NaN before this step */
    STEPS = 14,
};

static Config test_config(void) {
    Config cfg;
    char err[512];
    config_defaults(&cfg);
    if (config_load_file(&cfg, "configs/tiny", err, sizeof err) != 0) die("%s", err);
    cfg.warmup = 4;           /* the ramp covers the first updates */
    cfg.grad_clip = 0.05;     /* below the tiny model's early gradient norms: clipping acts */
    cfg.batch_size = 8;
    if (config_validate(&cfg, err, sizeof err) != 0) die("%s", err);
    return cfg;
}

/* The trainer's step before optimizer_control existed, from the host's point of view. */
static StepResult reference_step(Trainer *tr) {
    const Config *c = &tr->cfg;
    const Backend *be = tr->be;
    Net *m = tr->model;
    Objective *o = tr->objective;
    const int b = tr->local_batch, K = o->stats_per_sample;
    long step = tr->progress.step;
    trainer_enqueue_gradients(tr);
    be->wait_host_copies();
    for (int k = 0; k < K; k++)   /* one rank: the kinds lie in order in its block */
        memcpy(tr->stats_by_kind[k], tr->host_stats + (size_t)k * b, (size_t)b * sizeof(float));
    ObjectiveReport report;
    o->ops->report(o, tr->stats_by_kind, c->batch_size, &report);
    float norm;
    be->to_host(&norm, tr->grad_norm, sizeof norm);
    StepResult r = {.loss = report.loss, .vb = report.aux, .grad_norm = norm,
                    .lr = learning_rate(c, tr->progress.adam_steps)};
    if (tr->fault_step >= 0 && step >= tr->fault_step) r.loss = NAN;
    r.skipped = !isfinite(r.loss) || !isfinite(norm);
    if (r.skipped) {
        tr->progress.skipped_steps++;
        tr->bad_streak++;
    } else {
        tr->bad_streak = 0;
        long t = ++tr->progress.adam_steps;
        adamw_step(be, c, m->weights, NULL, m->grads, tr->adam_m, tr->adam_v, m->num_parameters,
                   t, r.lr, norm);
        be->ema_update(tr->ema, m->weights, m->num_parameters, (float)c->ema_decay);
    }
    tr->progress.step++;
    return r;
}

static int same_double(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

static int same_floats(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof(float)) == 0;
}

static void compare(const Trainer *device, const StepResult *d, const Trainer *host,
                    const StepResult *h, long step) {
    size_t P = device->model->num_parameters;
    CHECK(d->skipped == h->skipped, "step %ld: skipped %d, host logic %d", step, d->skipped,
          h->skipped);
    CHECK(same_double(d->loss, h->loss), "step %ld: loss %.9g vs %.9g", step, d->loss, h->loss);
    CHECK(same_double(d->vb, h->vb), "step %ld: vb %.9g vs %.9g", step, d->vb, h->vb);
    CHECK(same_double(d->grad_norm, h->grad_norm), "step %ld: grad norm %.9g vs %.9g", step,
          d->grad_norm, h->grad_norm);
    CHECK(same_double(d->lr, h->lr), "step %ld: lr %.17g vs %.17g", step, d->lr, h->lr);
    CHECK(device->progress.step == host->progress.step &&
              device->progress.adam_steps == host->progress.adam_steps &&
              device->progress.skipped_steps == host->progress.skipped_steps &&
              device->bad_streak == host->bad_streak,
          "step %ld: counters (step, adam, skipped, streak) %ld %ld %ld %d vs %ld %ld %ld %d",
          step, device->progress.step, device->progress.adam_steps,
          device->progress.skipped_steps, device->bad_streak, host->progress.step,
          host->progress.adam_steps, host->progress.skipped_steps, host->bad_streak);
    CHECK(same_floats(device->model->weights, host->model->weights, P), "step %ld: weights",
          step);
    CHECK(same_floats(device->ema, host->ema, P), "step %ld: EMA", step);
    CHECK(same_floats(device->adam_m, host->adam_m, P), "step %ld: Adam m", step);
    CHECK(same_floats(device->adam_v, host->adam_v, P), "step %ld: Adam v", step);
}

static void load_data(const Config *cfg, Dataset *data) {
    char err[1024];
    if (dataset_load_idx(data, cfg->data_path, cfg->image_size, cfg->data_limit, err,
                         sizeof err))
        die("%s", err);
}

int main(void) {
    Config cfg = test_config();
    char fault[32];
    snprintf(fault, sizeof fault, "%d", FAULT_FROM);
    setenv("DDPM_FAULT_NONFINITE_FROM_STEP", fault, 1);
    Trainer device, host;
    Dataset data;
    load_data(&cfg, &data);
    trainer_init(&device, backend_cpu(), &cfg, &data, NULL);
    load_data(&cfg, &data);
    trainer_init(&host, backend_cpu(), &cfg, &data, NULL);
    CHECK(device.fault_step == FAULT_FROM, "the fault hook was read from the environment");
    int clipped = 0, warming = 0, skipped = 0, updated_after_skip = 0;
    for (long step = 0; step < STEPS; step++) {
        if (step == FAULT_CLEARED) device.fault_step = host.fault_step = -1;
        if (step == NAN_PLANTED) device.model->weights[0] = host.model->weights[0] = NAN;
        StepResult d = trainer_step(&device);
        StepResult h = reference_step(&host);
        compare(&device, &d, &host, &h, step);
        clipped += !h.skipped && h.grad_norm > cfg.grad_clip;
        warming += !h.skipped && h.lr < cfg.lr;
        skipped += h.skipped;
        updated_after_skip += !h.skipped && host.progress.skipped_steps > 0;
        printf("  step %2ld: loss %-10.6g norm %-10.6g lr %-9.3g %s\n", step, h.loss,
               h.grad_norm, h.lr, h.skipped ? "skipped" : "");
    }
    /* the run covered what it claims to */
    CHECK(clipped >= 3, "clipping acted in only %d updates", clipped);
    CHECK(warming >= 3, "warmup acted in only %d updates", warming);
    CHECK(skipped == (FAULT_CLEARED - FAULT_FROM) + (STEPS - NAN_PLANTED),
          "%d steps skipped", skipped);
    CHECK(updated_after_skip >= 3, "only %d updates after a skipped step", updated_after_skip);
    trainer_free(&device);
    trainer_free(&host);
    return test_summary("optim_control");
}
