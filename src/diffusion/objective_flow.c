/* The rectified-flow objective (objective.h, flow.h): x_t = (1 - t) x0 + t eps at a drawn
 * t in (0, 1) (uniform or logit-normal), the network at time 1000 t, and the MSE to the
 * velocity eps - x0. Composed from existing ops: q_sample(_images) with per-sample tables
 * (a = 1 - t, b = t) writes x_t, eps and x0, and accumulate forms eps - x0. */
#include <math.h>
#include <stdlib.h>

#include "flow.h"
#include "guidance.h"
#include "objective.h"
#include "util.h"

typedef struct {
    const Backend *be;
    Config cfg;
    /* b = local batch, B = global batch, D = H*W*C */
    float *eps;          /* (b, D) backend: the drawn noise */
    float *velocity;     /* (b, D) backend: x0, then the target eps - x0 */
    int32_t *index;      /* (b) backend: 0..b-1, so the ops gather each sample's own a and b */
    float *keep, *noise; /* (b) backend: 1 - t and t of this rank's samples */
    double *host_t;      /* (B) the flow time of each sample of the global batch */
    float *host_keep, *host_noise, *host_time;  /* (B) 1 - t, t, 1000 t */
    int32_t *host_bucket;  /* (B) t on the trainer's timestep axis, for its loss quartiles */
    float *host_loss;    /* (B) */
    int32_t *host_class; /* (b) class-conditional: this step's labels after dropout */
    int32_t *grid_labels;  /* (sample_n) class-conditional: the training grids' classes */
} Flow;

static void flow_draw(Objective *o, long step, int B) {
    Flow *f = o->state;
    const Config *c = &f->cfg;
    RngKey key = {c->seed, RNG_STREAM_TIMESTEP, (uint32_t)step, 0};
    for (int i = 0; i < B; i++) {
        double t = flow_time_draw(c->timestep_sampler, c->logit_mean, c->logit_std, key, (uint32_t)i);
        f->host_t[i] = t;
        f->host_noise[i] = (float)t;
        f->host_keep[i] = (float)(1.0 - t);
        f->host_time[i] = (float)(FLOW_TIME_SCALE * t);
        int bucket = (int)(t * c->timesteps);
        f->host_bucket[i] = bucket < c->timesteps ? bucket : c->timesteps - 1;
    }
}

static void flow_prepare(Objective *o, Net *net, const StepBatch *batch) {
    Flow *f = o->state;
    const Backend *be = f->be;
    const Config *c = &f->cfg;
    const int b = batch->b;
    const size_t D = net_per_sample(net, net_input(net, "sample"));
    be->to_device(f->keep, f->host_keep + batch->sample0, (size_t)b * sizeof(float));
    be->to_device(f->noise, f->host_noise + batch->sample0, (size_t)b * sizeof(float));
    be->to_device(net_input_data(net, "timestep"), f->host_time + batch->sample0,
                  (size_t)b * sizeof(float));
    RngKey flip_key = {c->seed, RNG_STREAM_FLIP, (uint32_t)batch->step, batch->sample0};
    RngKey eps_key = {c->seed, RNG_STREAM_EPS, (uint32_t)batch->step, batch->sample0};
    if (c->num_class_embeds > 0) feed_class_labels(be, net, c, batch, f->host_class);
    float *x_t = net_input_data(net, "sample");
    if (batch->values) {
        be->q_sample(x_t, f->eps, batch->values, f->index, f->keep, f->noise, b, D, PRED_EPS,
                     eps_key);
        be->copy(f->velocity, batch->values, (size_t)b * D * sizeof(float));
    } else {
        be->q_sample_images(x_t, f->eps, f->velocity, batch->images, f->index, f->keep, f->noise,
                            b, c->image_size, c->image_size, c->in_channels, PRED_EPS, c->hflip,
                            flip_key, eps_key);
    }
    be->accumulate(f->velocity, -1.0f, f->eps, (size_t)b * D);   /* eps - x0 */
}

static void flow_loss(Objective *o, Net *net, const StepBatch *batch, float *stats) {
    Flow *f = o->state;
    const int out = net_output(net, "sample");
    f->be->mse_loss(stats, net_grad(net, out), net_data(net, out), f->velocity, batch->b,
                    net_per_sample(net, net_input(net, "sample")));
}

static void flow_report(Objective *o, float *const *stats, int B, ObjectiveReport *out) {
    Flow *f = o->state;
    double loss = 0;
    for (int i = 0; i < B; i++) {
        f->host_loss[i] = stats[0][i];
        loss += stats[0][i];
    }
    *out = (ObjectiveReport){.loss = loss / B, .aux = NAN, .loss_per_sample = f->host_loss,
                             .t = f->host_bucket};
}

static int flow_extras(Objective *o, CheckpointExtra *extras, int max) { return 0; }

static void flow_sample(Objective *o, Net *net, const float *weights, int n, uint64_t seed,
                        float *out) {
    Flow *f = o->state;
    const int32_t *labels = NULL;
    if (f->cfg.num_class_embeds > 0) {   /* the grid cycles through the classes */
        free(f->grid_labels);
        f->grid_labels = xmalloc((size_t)n * sizeof(int32_t));
        grid_class_labels(&f->cfg, n, f->grid_labels);
        labels = f->grid_labels;
    }
    flow_sample_images(net, weights, f->cfg.flow_steps, f->cfg.timesteps, f->cfg.flow_shift, n,
                       seed, labels, out);
}

static void flow_free(Objective *o) {
    Flow *f = o->state;
    const Backend *be = f->be;
    be->release(f->eps);
    be->release(f->velocity);
    be->release(f->index);
    be->release(f->keep);
    be->release(f->noise);
    free(f->host_t);
    free(f->host_keep);
    free(f->host_noise);
    free(f->host_time);
    free(f->host_bucket);
    free(f->host_loss);
    free(f->host_class);
    free(f->grid_labels);
    free(f);
}

static const ObjectiveOps flow_ops = {
    .name = "flow",
    .draw = flow_draw,
    .prepare = flow_prepare,
    .loss = flow_loss,
    .report = flow_report,
    .extras = flow_extras,
    .sample = flow_sample,
    .free = flow_free,
};

Objective *objective_flow_create(const Backend *be, const Config *cfg, int b, int B) {
    Flow *f = xcalloc(1, sizeof *f);
    f->be = be;
    f->cfg = *cfg;
    size_t D = (size_t)cfg->image_size * cfg->image_size * cfg->in_channels;
    f->eps = be->alloc((size_t)b * D * sizeof(float));
    f->velocity = be->alloc((size_t)b * D * sizeof(float));
    f->index = be->alloc((size_t)b * sizeof(int32_t));
    f->keep = be->alloc((size_t)b * sizeof(float));
    f->noise = be->alloc((size_t)b * sizeof(float));
    int32_t *index = xmalloc((size_t)b * sizeof(int32_t));
    for (int i = 0; i < b; i++) index[i] = i;
    be->to_device(f->index, index, (size_t)b * sizeof(int32_t));
    free(index);
    f->host_t = xmalloc((size_t)B * sizeof(double));
    f->host_keep = xmalloc((size_t)B * sizeof(float));
    f->host_noise = xmalloc((size_t)B * sizeof(float));
    f->host_time = xmalloc((size_t)B * sizeof(float));
    f->host_bucket = xmalloc((size_t)B * sizeof(int32_t));
    f->host_loss = xmalloc((size_t)B * sizeof(float));
    f->host_class = xmalloc((size_t)b * sizeof(int32_t));
    Objective *o = xcalloc(1, sizeof *o);
    *o = (Objective){.ops = &flow_ops, .stats_per_sample = 1, .loss_kinds = 1u, .state = f};
    return o;
}
