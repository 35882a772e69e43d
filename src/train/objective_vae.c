/* The KL autoencoder's objective (objective.h): the negative ELBO of LDM's first stage,
 * without the patch discriminator. Per sample s:
 *   loss[s] = rec[s] + kl_weight * kl[s]
 *   rec[s]  = sum over the H*W*C pixels of |x^ - x| (l1) or (x^ - x)^2 (l2), divided by
 *             exp(logvar) plus H*W*C*logvar when the log variance is learned;
 *   kl[s]   = KL(q(z|x) || N(0, I)) summed over the latent units;
 * and the step minimises the batch mean. Both terms are sums, so kl_weight = 1e-6 means
 * what it means in the LDM configs; a mean-reduced reconstruction with the same weight
 * would make the KL H*W*C times stronger. The posterior's eps is drawn from Philox
 * (seed, RNG_STREAM_POSTERIOR, step, sample), so a resumed run draws the same. A
 * discriminator would add a third term here, and its own network. */
#include <math.h>
#include <stdlib.h>

#include "autoencoder.h"
#include "objective.h"
#include "util.h"

/* Per-sample statistics: [rec (b) | kl (b)]. */
enum { STAT_REC = 0, STAT_KL = 1, VAE_STATS };

typedef struct {
    const Backend *be;
    Config cfg;
    float *x0;                /* (b, D) backend: the batch in [-1, 1], the target */
    float *scratch;           /* (b, D) backend: q_sample_images' unused target */
    int32_t *t0;              /* (b) backend: zeros */
    float *one, *zero;        /* (1) backend: the identity "schedule" for q_sample_images */
    float *host_loss;         /* (B) */
} Vae;

/* Nothing drawn for the whole batch: the posterior's eps is drawn per sample in prepare. */
static void vae_draw(Objective *o, long step, int B) { (void)o, (void)step, (void)B; }

/* The uint8 batch to [-1, 1] (and flipped) through the DDPM op at a schedule of one step
 * with sqrt(alpha_bar) = 1 and sqrt(1 - alpha_bar) = 0: x_t = 1*x0 + 0*eps = x0 exactly. */
static void vae_prepare(Objective *o, Net *net, const StepBatch *batch) {
    Vae *v = o->state;
    const Backend *be = v->be;
    const Config *c = &v->cfg;
    const uint32_t step = (uint32_t)batch->step;
    float *x = net_input_data(net, "sample");
    const size_t D = net_per_sample(net, net_input(net, "sample"));
    if (batch->values) {
        be->copy(x, batch->values, (size_t)batch->b * D * sizeof(float));
        be->copy(v->x0, batch->values, (size_t)batch->b * D * sizeof(float));
    } else {
        RngKey flip_key = {c->seed, RNG_STREAM_FLIP, step, batch->sample0};
        RngKey eps_key = {c->seed, RNG_STREAM_EPS, step, batch->sample0};
        be->q_sample_images(x, v->scratch, v->x0, batch->images, v->t0, v->one, v->zero,
                            batch->b, c->image_size, c->image_size, c->in_channels, PRED_X0,
                            c->hflip, flip_key, eps_key);
    }
    RngKey posterior_key = {c->seed, RNG_STREAM_POSTERIOR, step, batch->sample0};
    be->normal_fill(net_input_data(net, "noise"), batch->b,
                    net_per_sample(net, net_input(net, "noise")), posterior_key);
}

static void vae_loss(Objective *o, Net *net, const StepBatch *batch, float *stats) {
    Vae *v = o->state;
    const Backend *be = v->be;
    const Config *c = &v->cfg;
    const int b = batch->b;
    const int out = net_output(net, "sample"), moments = net_output(net, "moments");
    const ParamInfo *logvar = c->learn_logvar ? net_find_param(net, "logvar") : NULL;
    be->recon_loss(stats + (size_t)STAT_REC * b, net_grad(net, out),
                   logvar ? net->grads + logvar->offset : NULL, net_data(net, out), v->x0,
                   logvar ? net->weights + logvar->offset : NULL, b, net_per_sample(net, out),
                   c->recon_loss == RECON_L1);
    be->gaussian_kl(stats + (size_t)STAT_KL * b, net_grad(net, moments), net_data(net, moments),
                    b, net_height(net, moments) * net_width(net, moments),
                    c->latent_channels, (float)c->kl_weight);
}

static void vae_report(Objective *o, float *const *stats, int B, ObjectiveReport *out) {
    Vae *v = o->state;
    const float *rec = stats[STAT_REC], *kl = stats[STAT_KL];
    double loss = 0, kl_sum = 0;
    for (int i = 0; i < B; i++) {
        v->host_loss[i] = (float)(rec[i] + v->cfg.kl_weight * kl[i]);
        loss += v->host_loss[i];
        kl_sum += kl[i];
    }
    *out = (ObjectiveReport){.loss = loss / B, .aux = kl_sum / B,
                             .loss_per_sample = v->host_loss, .t = NULL};
}

static int vae_extras(Objective *o, CheckpointExtra *extras, int max) {
    (void)o, (void)extras, (void)max;
    return 0;   /* no state beyond the weights, the optimizer and the data position */
}

static void vae_free(Objective *o) {
    Vae *v = o->state;
    const Backend *be = v->be;
    be->release(v->x0);
    be->release(v->scratch);
    be->release(v->t0);
    be->release(v->one);
    be->release(v->zero);
    free(v->host_loss);
    free(v);
}

static const ObjectiveOps vae_ops = {
    .name = "vae",
    .aux_format = "KL %.2f",   /* the unweighted KL per sample, summed over latent units */
    .aux_column = "kl",
    .draw = vae_draw,
    .prepare = vae_prepare,
    .loss = vae_loss,
    .report = vae_report,
    .extras = vae_extras,
    .sample = NULL,
    .free = vae_free,
};

Objective *objective_vae_create(const Backend *be, const Config *cfg, int b, int B) {
    Vae *v = xcalloc(1, sizeof *v);
    v->be = be;
    v->cfg = *cfg;
    const size_t D = (size_t)cfg->image_size * cfg->image_size * cfg->in_channels;
    v->x0 = be->alloc((size_t)b * D * sizeof(float));
    v->scratch = be->alloc((size_t)b * D * sizeof(float));
    v->t0 = be->alloc((size_t)b * sizeof(int32_t));   /* zeroed: every sample at "t = 0" */
    v->one = be->alloc(sizeof(float));
    v->zero = be->alloc(sizeof(float));
    be->fill(v->one, 1.0f, 1);
    v->host_loss = xmalloc((size_t)B * sizeof(float));
    Objective *o = xcalloc(1, sizeof *o);
    *o = (Objective){.ops = &vae_ops, .stats_per_sample = VAE_STATS,
                     .loss_kinds = 1u << STAT_REC | 1u << STAT_KL, .state = v};
    return o;
}
