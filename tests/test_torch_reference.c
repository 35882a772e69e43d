/* The U-Net against the PyTorch port (tools/make_reference.py): output, loss, every
 * parameter gradient, and 5 AdamW steps with clipping, each within 1e-4 relative
 * error per tensor. The weights are loaded through the checkpoint reader, so the
 * diffusers names and the PyTorch-layout conversion are checked too. */
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "diffusion.h"
#include "ref_io.h"
#include "safetensors.h"
#include "testing.h"
#include "train.h"
#include "unet.h"
#include "util.h"

#define REF "tests/ref/unet_small.safetensors"
#define REF_SIGMA "tests/ref/unet_learned_sigma.safetensors"
#define REF_CLASS "tests/ref/unet_class.safetensors"
#define TOL 1e-4

static const StTensor *need(const StFile *f, const char *name) {
    const StTensor *t = st_find(f, name);
    if (!t) die("%s: reference tensor '%s' missing", REF, name);
    return t;
}

static float *copy_floats(const StTensor *t) {
    float *out = xmalloc(t->nbytes);
    memcpy(out, t->data, t->nbytes);
    return out;
}

/* Compares every parameter-shaped buffer (internal layout) with prefix.<name> tensors:
 * max |a - b| <= tol * max(max |b|, floor). The floor only matters for the to_k biases,
 * whose gradient is zero in exact arithmetic (softmax ignores a shift shared by a row)
 * and is rounding noise below 1e-9 on both sides; every other gradient tensor
 * here has max |b| above 3e-4, so the floor of 1e-5 loosens nothing else. */
static void compare_params(const Net *m, const StFile *f, const float *internal,
                           const char *prefix, const char *what, double tol, double floor) {
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->params[i];
        char name[160];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        float *ref = copy_floats(need(f, name));
        float *mine = xmalloc(p->numel * sizeof(float));
        param_to_torch(p, internal + p->offset, mine);
        double e = rel_error(mine, ref, p->numel, floor);
        if (!(e <= worst)) {
            worst = e;
            worst_name = p->name;
        }
        CHECK(e <= tol, "%s %s: relative error %.3g", what, p->name, e);
        free(ref);
        free(mine);
    }
    printf("  %-22s worst relative error %.3g (%s)\n", what, worst, worst_name);
}

static Config reference_config(const StFile *f) {
    Config cfg;
    char err[512];
    config_defaults(&cfg);
    if (config_load_json(&cfg, st_meta(f, "config"), REF, err, sizeof err) != 0) die("%s", err);
    if (config_load_json(&cfg, "{\"lr\": 1e-3, \"beta1\": 0.9, \"beta2\": 0.999, "
                         "\"adam_eps\": 1e-8, \"weight_decay\": 0.01, \"grad_clip\": 1.0}",
                         "adamw settings", err, sizeof err) != 0)
        die("%s", err);
    return cfg;
}

/* One forward + loss + backward on the reference batch; returns the loss. */
static double loss_and_grads(Net *m, const float *target_dev, float *loss_dev, int B) {
    RngKey none = {0};
    size_t D = net_per_sample(m, net_output(m, "sample"));
    net_forward(m, B, NULL, none);
    m->be->mse_loss(loss_dev, net_output_grad(m, "sample"), net_output_data(m, "sample"), target_dev, B, D);
    net_backward(m, B, none);
    float losses[64];
    m->be->to_host(losses, loss_dev, (size_t)B * sizeof(float));
    double loss = 0;
    for (int i = 0; i < B; i++) loss += losses[i];
    return loss / B;
}

/* The reference's int32 timesteps (copied: the file's data need not be aligned) into the
 * network's float time input, and into t_dev (int32, backend) for the loss's gathers. */
static void set_timesteps(Net *m, const StTensor *t, int n, int32_t *t_dev) {
    int32_t *host = xmalloc((size_t)n * sizeof(int32_t));
    float *time = xmalloc((size_t)n * sizeof(float));
    memcpy(host, t->data, (size_t)n * sizeof(int32_t));
    for (int i = 0; i < n; i++) time[i] = (float)host[i];
    m->be->to_device(net_input_data(m, "timestep"), time, (size_t)n * sizeof(float));
    if (t_dev) m->be->to_device(t_dev, host, (size_t)n * sizeof(int32_t));
    free(host);
    free(time);
}

/* Learned variances: the 6-channel output, and every gradient of the hybrid loss
 * (L_simple + T/1000 L_t, VLB gradient stopped at the mean) and of the kl loss (T L_t). */
static void check_learned_sigma(void) {
    StFile f;
    char err[1024];
    Config cfg = ref_open(&f, REF_SIGMA);
    cfg.learn_sigma = 1;
    const Backend *be = backend_cpu();
    const StTensor *x_t = need(&f, "input.x_t"), *t = need(&f, "input.t");
    int B = (int)x_t->shape[0], HW = cfg.image_size * cfg.image_size, C = cfg.in_channels;
    Net *m = unet_build(be, &cfg, B, 0);
    float *bufs[CKPT_BUFFERS] = {m->weights, NULL, NULL, NULL};
    CHECK(checkpoint_read(REF_SIGMA, m, bufs, NULL, err, sizeof err) == 0, "load: %s", err);
    be->to_device(net_input_data(m, "sample"), x_t->data, x_t->nbytes);
    int32_t *t_dev = be->alloc((size_t)B * sizeof(int32_t));
    set_timesteps(m, t, B, t_dev);
    net_forward(m, B, NULL, (RngKey){0});
    float *ref_out = copy_floats(need(&f, "output"));
    double e = rel_error(net_output_data(m, "sample"), ref_out, net_per_sample(m, net_output(m, "sample")) * B, 1e-12);
    printf("  learned sigma: output relative error %.3g\n", e);
    CHECK(e <= TOL, "learned-sigma output: relative error %.3g", e);

    GaussianDiffusion d;
    DeviceSchedule sched;
    diffusion_from_config(&d, &cfg, err, sizeof err);
    device_schedule_init(&sched, be, &d);
    float *x0 = copy_floats(need(&f, "input.x0")), *eps = copy_floats(need(&f, "input.eps"));
    float mse[8], vb[8];
    /* floors for the to_k biases' zero gradients (see compare_params), scaled with the
     * loss: kl is T = 50 times L_t; every other kl gradient tensor has max |b| above 0.017 */
    struct { const char *loss_name, *grad_prefix; LossSpec spec; double floor; } objectives[2] = {
        {"loss", "grad.", {.learned_var = 1, .mse_weight = 1, .vb_weight = cfg.timesteps / 1000.0f}, 1e-5},
        {"kl.loss", "kl.grad.", {.learned_var = 1, .vb_weight = (float)cfg.timesteps, .vb_trains_mean = 1}, 1e-3}};
    for (int k = 0; k < 2; k++) {
        LossSpec spec = objectives[k].spec;
        be->diffusion_loss(mse, vb, net_output_grad(m, "sample"), net_output_data(m, "sample"), eps, x0, net_input_data(m, "sample"),
                           t_dev, NULL, B, HW, C, spec, sched.tables);
        double loss = 0;
        for (int i = 0; i < B; i++) loss += (spec.mse_weight * mse[i] + spec.vb_weight * vb[i]) / B;
        float ref_loss;
        memcpy(&ref_loss, need(&f, objectives[k].loss_name)->data, sizeof ref_loss);
        printf("  %s: %.9g (reference %.9g)\n", objectives[k].loss_name, loss, ref_loss);
        CHECK(fabs(loss - ref_loss) <= TOL * fabs(ref_loss), "%s", objectives[k].loss_name);
        net_backward(m, B, (RngKey){0});
        compare_params(m, &f, m->grads, objectives[k].grad_prefix, objectives[k].grad_prefix, TOL,
                       objectives[k].floor);
    }
    free(ref_out), free(x0), free(eps);
    be->release(t_dev);
    device_schedule_free(&sched);
    diffusion_free(&d);
    net_free(m);
    st_free(&f);
}

/* A class-conditional model (tools/make_reference_class.py): output, loss and every
 * gradient, class_embedding.weight's included; the rows no label of the batch selects
 * get exactly zero. */
static void check_class_conditional(void) {
    StFile f;
    char err[1024];
    Config cfg = ref_open(&f, REF_CLASS);
    const Backend *be = backend_cpu();
    const StTensor *x_t = need(&f, "input.x_t"), *labels = need(&f, "input.labels");
    int B = (int)x_t->shape[0];
    Net *m = unet_build(be, &cfg, B, 0);
    CHECK(net_input(m, "class_labels") >= 0, "the class-conditional U-Net has no class_labels input");
    float *bufs[CKPT_BUFFERS] = {m->weights, NULL, NULL, NULL};
    CHECK(checkpoint_read(REF_CLASS, m, bufs, NULL, err, sizeof err) == 0, "load: %s", err);
    be->to_device(net_input_data(m, "sample"), x_t->data, x_t->nbytes);
    be->to_device(net_input_data(m, "class_labels"), labels->data, labels->nbytes);
    set_timesteps(m, need(&f, "input.t"), B, NULL);
    float *target = be->alloc(x_t->nbytes), *loss_dev = be->alloc((size_t)B * sizeof(float));
    be->to_device(target, need(&f, "input.target")->data, x_t->nbytes);
    double loss = loss_and_grads(m, target, loss_dev, B);
    float *ref_out = copy_floats(need(&f, "output"));
    double e = rel_error(net_output_data(m, "sample"), ref_out,
                         net_per_sample(m, net_output(m, "sample")) * B, 1e-12);
    printf("  class-conditional: output relative error %.3g\n", e);
    CHECK(e <= TOL, "class-conditional output: relative error %.3g", e);
    float ref_loss;
    memcpy(&ref_loss, need(&f, "loss")->data, sizeof ref_loss);
    CHECK(fabs(loss - ref_loss) <= TOL * ref_loss, "class-conditional loss %.9g vs %.9g", loss,
          ref_loss);
    compare_params(m, &f, m->grads, "grad.", "class-cond. gradients", TOL, 1e-5);
    const ParamInfo *table = net_find_param(m, "class_embedding.weight");
    CHECK(table != NULL, "no class_embedding.weight");
    int32_t ids[8];
    memcpy(ids, labels->data, (size_t)B * sizeof(int32_t));
    int used_nonzero = 1, unused_zero = 1;
    for (int r = 0; table && r < (int)table->shape[0]; r++) {
        int used = 0;
        for (int i = 0; i < B; i++) used |= ids[i] == r;
        double sum = 0;
        for (int64_t k = 0; k < table->shape[1]; k++)
            sum += fabs(m->grads[table->offset + r * table->shape[1] + k]);
        if (used) used_nonzero &= sum > 0;
        else unused_zero &= sum == 0;
    }
    CHECK(used_nonzero && unused_zero,
          "class_embedding.weight: only the rows the batch uses may get a gradient");
    free(ref_out);
    be->release(target);
    be->release(loss_dev);
    net_free(m);
    st_free(&f);
}

int main(void) {
    StFile f;
    char err[1024];
    if (st_read(&f, REF, err, sizeof err) != 0) die("%s", err);
    Config cfg = reference_config(&f);
    const Backend *be = backend_cpu();
    const StTensor *x_t = need(&f, "input.x_t"), *t = need(&f, "input.t");
    int B = (int)x_t->shape[0];
    Net *m = unet_build(be, &cfg, B, 0);
    float *bufs[CKPT_BUFFERS] = {m->weights, NULL, NULL, NULL};
    CHECK(checkpoint_read(REF, m, bufs, NULL, err, sizeof err) == 0, "load: %s", err);
    printf("  reference model: %zu parameters\n", m->num_parameters);
    be->to_device(net_input_data(m, "sample"), x_t->data, x_t->nbytes);
    set_timesteps(m, t, B, NULL);
    float *target = be->alloc(x_t->nbytes), *loss_dev = be->alloc((size_t)B * sizeof(float));
    be->to_device(target, need(&f, "input.target")->data, x_t->nbytes);

    double loss = loss_and_grads(m, target, loss_dev, B);
    float *ref_out = copy_floats(need(&f, "output"));
    double out_err = rel_error(net_output_data(m, "sample"), ref_out, net_per_sample(m, net_output(m, "sample")) * B, 1e-12);
    printf("  output relative error %.3g\n", out_err);
    CHECK(out_err <= TOL, "output: relative error %.3g", out_err);
    float ref_loss;
    memcpy(&ref_loss, need(&f, "loss")->data, sizeof ref_loss);
    CHECK(fabs(loss - ref_loss) <= TOL * ref_loss, "loss %.9g vs %.9g", loss, ref_loss);
    compare_params(m, &f, m->grads, "grad.", "gradients", TOL, 1e-5);

    float *adam_m = be->alloc(m->num_parameters * sizeof(float));
    float *adam_v = be->alloc(m->num_parameters * sizeof(float));
    float *ref_losses = copy_floats(need(&f, "adamw.losses"));
    float *ref_norms = copy_floats(need(&f, "adamw.grad_norms"));
    float norm, *norm_dev = be->alloc(sizeof(float));
    for (int step = 1; step <= 5; step++) {
        double l = step == 1 ? loss : loss_and_grads(m, target, loss_dev, B);
        be->global_norm(norm_dev, m->grads, m->num_parameters);
        be->to_host(&norm, norm_dev, sizeof norm);
        printf("  adamw step %d: loss %.9f (ref %.9f), grad norm %.6f (ref %.6f)\n", step, l,
               ref_losses[step - 1], norm, ref_norms[step - 1]);
        CHECK(fabs(l - ref_losses[step - 1]) <= TOL * ref_losses[step - 1], "adamw loss %d", step);
        CHECK(fabs(norm - ref_norms[step - 1]) <= TOL * ref_norms[step - 1], "grad norm %d", step);
        adamw_step(be, &cfg, m->weights, NULL, m->grads, adam_m, adam_v, m->num_parameters, step,
                   cfg.lr, norm);
    }
    /* Adam normalises each element's step, so where a gradient is near zero its
     * rounding decides a step of up to lr: weights are compared at a fraction of
     * the distance the optimizer can move them (5 steps of lr), not relatively. */
    compare_params(m, &f, m->weights, "adamw.final.", "weights after 5 steps", 0.02 * 5 * cfg.lr,
                   1.0);

    free(ref_out);
    free(ref_losses);
    free(ref_norms);
    be->release(norm_dev);
    be->release(adam_m);
    be->release(adam_v);
    be->release(target);
    be->release(loss_dev);
    net_free(m);
    st_free(&f);
    check_learned_sigma();
    check_class_conditional();
    return test_summary("torch_reference");
}
