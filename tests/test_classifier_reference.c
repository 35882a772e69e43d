/* The noisy classifier against its PyTorch port (tools/make_classifier_reference.py):
 * logits, the mean cross-entropy, every parameter gradient, and the guidance gradient
 * d/dx sum_i log softmax(f(x_i, t_i))[y_i] through NetClassGradient, each within 1e-4
 * relative error. The weights are loaded by name through the checkpoint reader. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "classifier.h"
#include "classifier_guidance.h"
#include "ref_io.h"
#include "safetensors.h"
#include "testing.h"
#include "util.h"

#define REF "tests/ref/classifier_small.safetensors"
#define TOL 1e-4

static void *copy_data(const StTensor *t) {
    void *out = xmalloc(t->nbytes);
    memcpy(out, t->data, t->nbytes);
    return out;
}

static void compare_grads(const Net *m, const StFile *f) {
    double worst = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->params[i];
        char name[160];
        snprintf(name, sizeof name, "grad.%s", p->name);
        float *ref = copy_data(ref_tensor(f, name)), *mine = xmalloc(p->numel * sizeof(float));
        param_to_torch(p, m->grads + p->offset, mine);
        /* the floor: to_k's bias gradients are 0 in exact arithmetic (rounding noise) */
        double e = rel_error(mine, ref, p->numel, 1e-5);
        worst = fmax(worst, e);
        CHECK(e <= TOL, "gradient of %s: relative error %.3g", p->name, e);
        free(ref), free(mine);
    }
    printf("  parameter gradients: worst relative error %.3g over %d tensors\n", worst, m->n_params);
}

int main(void) {
    StFile f;
    char err[1024];
    Config cfg = ref_open(&f, REF);
    const Backend *be = backend_cpu();
    const StTensor *x = ref_tensor(&f, "input.x_t");
    const int B = (int)x->shape[0];
    Net *m = classifier_build(be, &cfg, B, 1, NULL);
    float *bufs[CKPT_BUFFERS] = {m->weights, NULL, NULL, NULL};
    CHECK(checkpoint_read(REF, m, bufs, NULL, err, sizeof err) == 0, "load: %s", err);
    int32_t *t = copy_data(ref_tensor(&f, "input.t")), *labels = copy_data(ref_tensor(&f, "input.labels"));
    float time[16], *x_host = copy_data(x);
    for (int i = 0; i < B; i++) time[i] = (float)t[i];
    be->to_device(net_input_data(m, "sample"), x_host, x->nbytes);
    be->to_device(net_input_data(m, "timestep"), time, (size_t)B * sizeof(float));
    net_forward(m, B, NULL, (RngKey){0});
    const int classes = cfg.num_classes;
    float *ref_logits = copy_data(ref_tensor(&f, "logits")), loss[16], ref_loss;
    double e = rel_error(net_output_data(m, "logits"), ref_logits, (size_t)B * classes, 1e-12);
    printf("  logits relative error %.3g\n", e);
    CHECK(e <= TOL, "logits: relative error %.3g", e);
    be->cross_entropy(loss, NULL, net_output_grad(m, "logits"), net_output_data(m, "logits"),
                      labels, B, classes, 1.0f / B);
    double mean = 0;
    for (int i = 0; i < B; i++) mean += loss[i] / B;
    memcpy(&ref_loss, ref_tensor(&f, "loss")->data, sizeof ref_loss);
    CHECK(fabs(mean - ref_loss) <= TOL * ref_loss, "loss %.9g vs %.9g", mean, ref_loss);
    net_backward(m, B, (RngKey){0});
    compare_grads(m, &f);

    /* the guidance gradient, through the wrapper's own path */
    NetClassGradient g;
    net_class_gradient_init(&g, m);
    size_t n = (size_t)x->nbytes / sizeof(float);
    float *grad = be->alloc(n * sizeof(float)), *ref_grad = copy_data(ref_tensor(&f, "guidance.grad_x"));
    for (int i = 0; i < B; i++) {   /* one call per sample: each has its own t */
        size_t per = n / B;
        g.base.grad(&g.base, x_host + i * per, 1, time[i], labels + i, 1.0f, grad + i * per);
    }
    e = rel_error(grad, ref_grad, n, 1e-12);
    printf("  guidance gradient d/dx log p(y|x): relative error %.3g\n", e);
    CHECK(e <= TOL, "guidance gradient: relative error %.3g", e);
    net_class_gradient_free(&g);
    be->release(grad);
    free(ref_grad), free(t), free(labels), free(x_host), free(ref_logits);
    net_free(m);
    st_free(&f);
    return test_summary("classifier_reference");
}
