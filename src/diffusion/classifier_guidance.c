/* Classifier guidance (classifier_guidance.h). */
#include "classifier_guidance.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"

/* ---------------- a classifier network's gradient ---------------- */

static void net_class_grad(ClassGradient *self, const float *x, int n, float t,
                           const int32_t *labels, float scale, float *out) {
    NetClassGradient *g = (NetClassGradient *)self;
    Net *net = g->net;
    const Backend *be = net->be;
    const size_t D = net_per_sample(net, net_input(net, "sample"));
    for (int i = 0; i < n; i++) g->t_host[i] = t;
    be->to_device(net_input_data(net, "timestep"), g->t_host, (size_t)n * sizeof(float));
    be->to_device(g->labels, labels, (size_t)n * sizeof(int32_t));
    be->copy(net_input_data(net, "sample"), x, (size_t)n * D * sizeof(float));
    net->training = 0;
    net_forward(net, n, NULL, (RngKey){0});
    const int logits = net_output(net, "logits");
    /* dlogits = -scale (softmax - onehot) = scale * d/dlogits log p(y | x) */
    be->cross_entropy(g->loss, NULL, net_grad(net, logits), net_data(net, logits), g->labels, n,
                      net_channels(net, logits), -scale);
    net_backward(net, n, (RngKey){0});
    be->copy(out, net_input_grad(net, "sample"), (size_t)n * D * sizeof(float));
}

void net_class_gradient_init(NetClassGradient *g, Net *classifier) {
    if (!net_input_grad(classifier, "sample"))
        die("internal: classifier guidance needs the classifier built with input_grad");
    const Backend *be = classifier->be;
    int B = classifier->max_batch;
    *g = (NetClassGradient){.base = {.grad = net_class_grad}, .net = classifier,
                            .labels = be->alloc((size_t)B * sizeof(int32_t)),
                            .loss = be->alloc((size_t)B * sizeof(float)),
                            .t_host = xmalloc((size_t)B * sizeof(float))};
}

void net_class_gradient_free(NetClassGradient *g) {
    const Backend *be = g->net->be;
    be->release(g->labels);
    be->release(g->loss);
    free(g->t_host);
}

/* ---------------- the guided denoiser ---------------- */

static const float *guided_predict(Denoiser *self, const float *x, int n, float t) {
    ClassifierGuidance *g = (ClassifierGuidance *)self;
    const Backend *be = self->be;
    if (!self->labels) die("classifier guidance needs a class for every sample (--class)");
    g->inner->labels = self->labels;
    const float *eps = g->inner->predict(g->inner, x, n, t);
    const int model_t = (int)t;
    const double k = model_t >= 0 && model_t < g->num_timesteps ? g->k[model_t] : 0.0;
    if (k == 0.0 || g->scale == 0.0f) return eps;   /* no variance to shift: the last step */
    const size_t D = self->sample_size;
    /* out = eps - k s g: the classifier writes (-k s) g */
    g->classifier->grad(g->classifier, x, n, t, self->labels, (float)(-k * g->scale), g->grad);
    be->add_forward(g->out, eps, g->grad, (size_t)n * D);
    return g->out;
}

/* k for step i: how far the model output moves per unit of s * g. */
static double step_shift(const SamplerPlan *plan, int i, SamplerKind kind) {
    const GaussianDiffusion *p = &plan->process;
    if (kind == SAMPLER_DDIM) return sqrt(1.0 - p->alphas_cumprod[i]);
    /* guided-diffusion's model variance: the posterior's (fixedsmall), or betas with the
     * posterior's at t = 0 (fixedlarge) */
    double var = p->variance == VAR_FIXED_LARGE ? (i == 0 ? p->posterior_variance[plan->count > 1 ? 1 : 0]
                                                          : p->betas[i])
                                                : p->posterior_variance[i];
    const SampleUpdate *u = &plan->update[i];
    double dmean_dout = (double)u->coef_x0 * u->x0_from_out;   /* d mean / d output */
    return dmean_dout != 0 ? -var / dmean_dout : 0.0;
}

int classifier_guidance_init(ClassifierGuidance *g, Denoiser *inner, ClassGradient *classifier,
                             const SamplerPlan *plan, SamplerKind kind, int num_timesteps,
                             float scale, char *err, size_t err_size) {
    if (inner->output.learned_var) {
        snprintf(err, err_size, "classifier guidance of a model with learned variances is not "
                 "supported (it would need the per-pixel variance)");
        return -1;
    }
    if (kind == SAMPLER_DDIM && inner->output.prediction != PRED_EPS) {
        snprintf(err, err_size, "classifier guidance with DDIM needs a model that predicts eps");
        return -1;
    }
    *g = (ClassifierGuidance){.base = *inner, .inner = inner, .classifier = classifier,
                              .scale = scale, .num_timesteps = num_timesteps};
    g->base.predict = guided_predict;
    g->base.predict_at = NULL;   /* the guided predict must run */
    g->base.labels = NULL;
    g->k = xcalloc((size_t)num_timesteps, sizeof(double));
    for (int i = 0; i < plan->count; i++) {
        int t = plan->model_t[i];
        if (t >= 0 && t < num_timesteps) g->k[t] = step_shift(plan, i, kind);
    }
    size_t floats = (size_t)inner->max_batch * inner->sample_size;
    g->out = inner->be->alloc(floats * sizeof(float));
    g->grad = inner->be->alloc(floats * sizeof(float));
    return 0;
}

void classifier_guidance_free(ClassifierGuidance *g) {
    free(g->k);
    g->inner->be->release(g->out);
    g->inner->be->release(g->grad);
}
