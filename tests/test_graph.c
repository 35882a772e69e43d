/* The graph is a seam, not the U-Net's private tape: a second network built on it here
 * (a small noisy classifier: the U-Net's encoder half, GroupNorm + SiLU, mean pooling
 * and a linear head), and a class-embedding network, have their parameter gradients
 * and the classifier its input gradient checked against central differences of the
 * forward pass, on the CPU backend.
 *
 * The loss is L = sum of w * output for a fixed random w, so dL/doutput = w. Each check
 * compares a directional derivative: (L(p + h v) - L(p - h v)) / 2h against g . v, for
 * random directions v over all parameters (or all inputs), and along single
 * coordinates where the gradient is largest. In float32 with h = 1e-2 the forward's
 * rounding over 2h and the O(h^2) truncation bound the error near 1e-4 of |g . v|;
 * the tolerance is 2e-3, so a wrong or missing term fails it by far. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "classifier.h"
#include "graph.h"
#include "nn_blocks.h"
#include "testing.h"
#include "unet.h"
#include "util.h"

enum { B = 3, CLASSES = 4, DIRECTIONS = 3, COORDINATES = 4 };
#define STEP 1e-2
#define TOL 2e-3

static Config small_config(void) {
    Config cfg;
    config_defaults(&cfg);
    cfg.image_size = 8, cfg.in_channels = 2, cfg.ch = 8, cfg.groups = 4, cfg.dropout = 0;
    cfg.n_ch_mult = 2, cfg.ch_mult[0] = 1, cfg.ch_mult[1] = 2, cfg.num_res_blocks = 1;
    cfg.n_attn_resolutions = 1, cfg.attn_resolutions[0] = 4;
    return cfg;
}

/* The noisy classifier (classifier.h): logits (B, CLASSES) of x_t at time t. */
static Net *small_classifier(Config *cfg) {
    cfg->num_classes = CLASSES;
    return classifier_build(backend_cpu(), cfg, B, 1, NULL);
}

/* Class labels through an embedding, a SiLU and a linear layer. */
static Net *embedding_net_build(void) {
    Net *net = net_create(backend_cpu(), B);
    int ids = net_add_input(net, "class_labels", NET_I32, 1, 1, 1, 0);
    int h = net_silu(net, net_embedding(net, "class_embedding", ids, 5, 6));
    net_add_output(net, "out", net_linear(net, "proj", h, 3));
    net_finish(net);
    return net;
}

static void fill_uniform(float *x, size_t n, uint32_t stream, float lo, float hi) {
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * philox_uniform((RngKey){5, stream, 0, 0}, 0, i);
}

static double loss(Net *net, const float *w, const char *out) {
    net_forward(net, B, NULL, (RngKey){0});
    const float *y = net_output_data(net, out);
    size_t n = (size_t)B * net_per_sample(net, net_output(net, out));
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (double)w[i] * y[i];
    return sum;
}

/* (L(p + h v) - L(p - h v)) / 2h for the buffer p of n floats, restored after. */
static double central_difference(Net *net, const float *w, const char *out, float *p,
                                 const float *v, size_t n) {
    float *saved = xmalloc(n * sizeof(float));
    memcpy(saved, p, n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = saved[i] + (float)STEP * v[i];
    double plus = loss(net, w, out);
    for (size_t i = 0; i < n; i++) p[i] = saved[i] - (float)STEP * v[i];
    double minus = loss(net, w, out);
    memcpy(p, saved, n * sizeof(float));
    free(saved);
    return (plus - minus) / (2 * STEP);
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* The index of the rank-th largest |g[i]| (rank 0: the largest). */
static size_t kth_largest(const float *g, size_t n, int rank) {
    float *magnitude = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) magnitude[i] = fabsf(g[i]);
    size_t best = 0;
    for (int r = 0; r <= rank; r++) {
        best = 0;
        for (size_t i = 1; i < n; i++)
            if (magnitude[i] > magnitude[best]) best = i;
        magnitude[best] = -1;
    }
    free(magnitude);
    return best;
}

/* Directional derivatives of L with respect to p (n floats) whose analytic gradient is g:
 * along random directions, and along the coordinates of largest |g|. */
static void check_gradient(Net *net, const float *w, const char *out, float *p, const float *g,
                           size_t n, const char *what) {
    float *v = xmalloc(n * sizeof(float));
    double worst = 0;
    for (int k = 0; k < DIRECTIONS + COORDINATES; k++) {
        if (k < DIRECTIONS) {   /* unit length: a step of STEP moves p by STEP in all */
            fill_uniform(v, n, 40 + (uint32_t)k, -1, 1);
            double norm = sqrt(dot(v, v, n));
            for (size_t i = 0; i < n; i++) v[i] = (float)(v[i] / norm);
        } else {
            memset(v, 0, n * sizeof(float));
            v[kth_largest(g, n, k - DIRECTIONS)] = 1;
        }
        double numeric = central_difference(net, w, out, p, v, n);
        double analytic = dot(g, v, n);
        double err = fabs(numeric - analytic) / fmax(fabs(analytic), 1e-3);
        if (err > worst) worst = err;
        CHECK(err <= TOL, "%s, %s %d: numeric %.7g, analytic %.7g (relative error %.3g)", what,
              k < DIRECTIONS ? "direction" : "coordinate", k, numeric, analytic, err);
    }
    printf("  %-32s worst relative error %.3g over %d directions and %d coordinates\n", what,
           worst, DIRECTIONS, COORDINATES);
    free(v);
}

/* Fills the inputs, runs forward and backward with dL/doutput = w. */
static void gradients(Net *net, const float *w, const char *out) {
    net_forward(net, B, NULL, (RngKey){0});
    size_t n = (size_t)B * net_per_sample(net, net_output(net, out));
    memcpy(net_output_grad(net, out), w, n * sizeof(float));
    net_backward(net, B, (RngKey){0});
}

static void test_classifier(void) {
    Config cfg = small_config();
    Net *net = small_classifier(&cfg);
    net->training = 0;
    net_init_weights(net, 3, NULL);
    CHECK(net_find_param(net, "down_blocks.0.resnets.0.conv1.weight") &&
              net_find_param(net, "mid_block.attentions.0.to_q.weight") &&
              net_find_param(net, "out.2.weight") && !net_find_param(net, "conv_out.weight"),
          "the classifier has the encoder's parameters and its head, and no decoder");
    size_t x_n = (size_t)B * net_per_sample(net, net_input(net, "sample"));
    float *x = net_input_data(net, "sample"), *t = net_input_data(net, "timestep");
    fill_uniform(x, x_n, 1, -1, 1);
    for (int i = 0; i < B; i++) t[i] = 100.0f + 333.5f * i;
    float w[B * CLASSES];
    fill_uniform(w, B * CLASSES, 2, -1, 1);
    gradients(net, w, "logits");
    float *g = xmalloc(net->num_parameters * sizeof(float));
    memcpy(g, net->grads, net->num_parameters * sizeof(float));
    float *gx = xmalloc(x_n * sizeof(float));
    memcpy(gx, net_input_grad(net, "sample"), x_n * sizeof(float));
    double gx_norm = sqrt(dot(gx, gx, x_n));
    CHECK(gx_norm > 0, "the input gradient is computed (norm %.3g)", gx_norm);
    printf("  classifier: %zu parameters, input gradient norm %.4g\n", net->num_parameters,
           gx_norm);
    check_gradient(net, w, "logits", net->weights, g, net->num_parameters,
                   "classifier parameters");
    check_gradient(net, w, "logits", x, gx, x_n, "classifier input x_t");
    free(g);
    free(gx);
    net_free(net);
}

static void test_embedding_net(void) {
    Net *net = embedding_net_build();
    net_init_weights(net, 4, NULL);
    int32_t *ids = net_input_data(net, "class_labels");
    ids[0] = 3, ids[1] = 0, ids[2] = 3;   /* rows 1, 2 and 4 unused; row 3 twice */
    float w[B * 3];
    fill_uniform(w, B * 3, 3, -1, 1);
    gradients(net, w, "out");
    const ParamInfo *table = net_find_param(net, "class_embedding.weight");
    CHECK(table && table->shape[0] == 5 && table->shape[1] == 6, "class_embedding.weight (5, 6)");
    if (!table) return;
    const float *dt = net->grads + table->offset;
    int unused_zero = 1;
    for (int row = 1; row < 5; row++)
        for (int j = 0; j < 6 && row != 3; j++) unused_zero &= dt[row * 6 + j] == 0.0f;
    CHECK(unused_zero, "rows no label selects get a zero gradient");
    float *g = xmalloc(net->num_parameters * sizeof(float));
    memcpy(g, net->grads, net->num_parameters * sizeof(float));
    check_gradient(net, w, "out", net->weights, g, net->num_parameters, "embedding network");
    free(g);
    net_free(net);
}

int main(void) {
    test_classifier();
    test_embedding_net();
    return test_summary("graph");
}
