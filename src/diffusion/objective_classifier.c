/* The noisy classifier's objective (objective.h): cross-entropy of the classifier on
 * x_t = q_sample(x0, t), t uniform in [0, classifier_t_max) (all timesteps by default,
 * as guided-diffusion trains its classifiers; 1: a clean classifier at t = 0). */
#include <stdlib.h>

#include "diffusion.h"
#include "objective.h"
#include "util.h"

/* Per-sample statistics: [cross-entropy (b) | 1 when the prediction is right (b)]. */
enum { STAT_XENT = 0, STAT_CORRECT = 1, CLASSIFIER_STATS };

typedef struct {
    const Backend *be;
    Config cfg;
    GaussianDiffusion diffusion;
    DeviceSchedule schedule;
    int t_max;                       /* t in [0, t_max) */
    /* b = local batch, B = global batch, D = H*W*C */
    float *target;                   /* (b, D) backend: q_sample's target (unused) */
    int32_t *t;                      /* (b) backend */
    int32_t *labels;                 /* (b) backend: this rank's labels */
    int32_t *host_t;                 /* (B) */
    float *host_time;                /* (B) */
    float *host_loss;                /* (B) */
} Classifier;

static void classifier_draw(Objective *o, long step, int B) {
    Classifier *d = o->state;
    RngKey key = {d->cfg.seed, RNG_STREAM_TIMESTEP, (uint32_t)step, 0};
    for (int i = 0; i < B; i++) {
        d->host_t[i] = (int32_t)philox_below(key, 0, (uint64_t)i, (uint32_t)d->t_max);
        d->host_time[i] = (float)d->host_t[i];
    }
}

static void check_labels(const Classifier *d, const StepBatch *batch) {
    if (!batch->labels)
        die("objective=classifier: the data set (%s) has no labels", d->cfg.data_path);
    for (int i = 0; i < batch->B; i++)
        if (batch->labels[i] < 0 || batch->labels[i] >= d->cfg.num_classes)
            die("%s: label %d is outside [0, num_classes = %d)", d->cfg.data_path,
                batch->labels[i], d->cfg.num_classes);
}

static void classifier_prepare(Objective *o, Net *net, const StepBatch *batch) {
    Classifier *d = o->state;
    const Backend *be = d->be;
    const Config *c = &d->cfg;
    const int b = batch->b;
    check_labels(d, batch);
    be->to_device(d->labels, batch->labels + batch->sample0, (size_t)b * sizeof(int32_t));
    be->to_device(d->t, d->host_t + batch->sample0, (size_t)b * sizeof(int32_t));
    be->to_device(net_input_data(net, "timestep"), d->host_time + batch->sample0,
                  (size_t)b * sizeof(float));
    RngKey flip_key = {c->seed, RNG_STREAM_FLIP, (uint32_t)batch->step, batch->sample0};
    RngKey eps_key = {c->seed, RNG_STREAM_EPS, (uint32_t)batch->step, batch->sample0};
    float *x_t = net_input_data(net, "sample");
    if (batch->values) {
        be->q_sample(x_t, d->target, batch->values, d->t, d->schedule.sqrt_ac,
                     d->schedule.sqrt_1m_ac, b, net_per_sample(net, net_input(net, "sample")),
                     PRED_EPS, eps_key);
        return;
    }
    be->q_sample_images(x_t, d->target, NULL, batch->images, d->t, d->schedule.sqrt_ac,
                        d->schedule.sqrt_1m_ac, b, c->image_size, c->image_size, c->in_channels,
                        PRED_EPS, c->hflip, flip_key, eps_key);
}

static void classifier_loss(Objective *o, Net *net, const StepBatch *batch, float *stats) {
    Classifier *d = o->state;
    const int b = batch->b, out = net_output(net, "logits");
    /* 1/b: the gradient of this rank's mean, as the MSE of DDPM; the all-reduce averages */
    d->be->cross_entropy(stats + (size_t)STAT_XENT * b, stats + (size_t)STAT_CORRECT * b,
                         net_grad(net, out), net_data(net, out), d->labels, b,
                         d->cfg.num_classes, 1.0f / b);
}

static void classifier_report(Objective *o, float *const *stats, int B, ObjectiveReport *out) {
    Classifier *d = o->state;
    double loss = 0, correct = 0;
    for (int i = 0; i < B; i++) {
        d->host_loss[i] = stats[STAT_XENT][i];
        loss += stats[STAT_XENT][i];
        correct += stats[STAT_CORRECT][i];
    }
    *out = (ObjectiveReport){.loss = loss / B, .aux = correct / B,
                             .loss_per_sample = d->host_loss, .t = d->host_t};
}

static void classifier_free(Objective *o) {
    Classifier *d = o->state;
    const Backend *be = d->be;
    device_schedule_free(&d->schedule);
    diffusion_free(&d->diffusion);
    be->release(d->target);
    be->release(d->t);
    be->release(d->labels);
    free(d->host_t);
    free(d->host_time);
    free(d->host_loss);
    free(d);
}

static const ObjectiveOps classifier_ops = {
    .name = "classifier",
    .aux_format = "accuracy %.4f",
    .aux_column = "accuracy",
    .draw = classifier_draw,
    .prepare = classifier_prepare,
    .loss = classifier_loss,
    .report = classifier_report,
    .free = classifier_free,
};

Objective *objective_classifier_create(const Backend *be, const Config *cfg, int b, int B) {
    Classifier *d = xcalloc(1, sizeof *d);
    d->be = be;
    d->cfg = *cfg;
    char err[512];
    if (diffusion_from_config(&d->diffusion, cfg, err, sizeof err) != 0) die("config: %s", err);
    device_schedule_init(&d->schedule, be, &d->diffusion);
    d->t_max = cfg->classifier_t_max > 0 ? cfg->classifier_t_max : cfg->timesteps;
    size_t D = (size_t)cfg->image_size * cfg->image_size * cfg->in_channels;
    d->target = be->alloc((size_t)b * D * sizeof(float));
    d->t = be->alloc((size_t)b * sizeof(int32_t));
    d->labels = be->alloc((size_t)b * sizeof(int32_t));
    d->host_t = xmalloc((size_t)B * sizeof(int32_t));
    d->host_time = xmalloc((size_t)B * sizeof(float));
    d->host_loss = xmalloc((size_t)B * sizeof(float));
    Objective *o = xcalloc(1, sizeof *o);
    *o = (Objective){.ops = &classifier_ops, .stats_per_sample = CLASSIFIER_STATS,
                     .loss_kinds = 1u << STAT_XENT, .state = d};
    return o;
}
