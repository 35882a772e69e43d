/* The ResBlock's fusions against the plain chain they replace, on the CPU backend:
 *  - norm2 -> SiLU -> dropout as one GroupNorm node (same Philox masks: the dropout
 *    streams count dropouts, not nodes),
 *  - conv1's bias folded into the time embedding's add_bias,
 *  - the skip add accumulated by the last conv (conv2, or conv_shortcut when the
 *    channels change).
 * block_resnet builds both forms (BlockNorm.unfused) with the same parameters in the same
 * order; in training mode with dropout the output and every gradient (input, time
 * embedding, each parameter) must agree to 1e-6 relative to the tensor's max: only the
 * order of a few float additions differs. The fused form must also have fewer nodes.
 *
 * And evaluation-mode dropout: the output is an alias of the input (the same address,
 * no op runs), the gradient passes through unchanged, and training mode still applies
 * dropout_forward's mask into the output's own buffer. */
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "nn_blocks.h"
#include "testing.h"
#include "util.h"

enum { B = 3, H = 6, W = 5, TEMB = 16 };
#define FUSION_TOL 1e-6

static void fill_uniform(float *x, size_t n, uint32_t stream, float lo, float hi) {
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * philox_uniform((RngKey){9, stream, 0, 0}, 0, i);
}

/* One ResBlock: x (H, W, cin) and an activated time embedding (1, 1, TEMB) in, out. */
static Net *resblock_net(int cin, int cout, int with_temb, float dropout, int unfused) {
    Net *net = net_create(backend_cpu(), B);
    int x = net_add_input(net, "x", NET_F32, H, W, cin, 1);
    int temb = with_temb ? net_add_input(net, "temb", NET_F32, 1, 1, TEMB, 1) : -1;
    BlockNorm norm = {.groups = 4, .eps = 1e-6f, .dropout = dropout, .unfused = unfused};
    net_add_output(net, "out", block_resnet(net, "block", x, temb, cout, norm));
    net_finish(net);
    net_init_weights(net, 17, NULL);
    /* the biases start small in PyTorch's init; larger ones exercise the folds */
    for (int i = 0; i < net->n_params; i++)
        if (strstr(net->params[i].name, ".bias"))
            fill_uniform(net->weights + net->params[i].offset, net->params[i].numel, 40 + i, -1,
                         1);
    return net;
}

static size_t numel(const Net *net, const char *port, int input) {
    int t = input ? net_input(net, port) : net_output(net, port);
    return (size_t)B * net_per_sample(net, t);
}

/* Forward and backward with fixed inputs and output gradient. */
static void run(Net *net, int training, RngKey key) {
    net->training = training;
    fill_uniform(net_input_data(net, "x"), numel(net, "x", 1), 1, -2, 2);
    if (net_input(net, "temb") >= 0)
        fill_uniform(net_input_data(net, "temb"), numel(net, "temb", 1), 2, -1, 1);
    net_forward(net, B, NULL, key);
    fill_uniform(net_output_grad(net, "out"), numel(net, "out", 0), 3, -1, 1);
    net_backward(net, B, key);
}

static double worst;   /* the largest relative difference of the current comparison */

static void expect_close(const char *what, const char *name, const float *fused,
                         const float *plain, size_t n) {
    double err = rel_error(fused, plain, n, 1e-12);
    if (err > worst) worst = err;
    CHECK(err <= FUSION_TOL, "%s: %s differs from the unfused chain by %.3g relative", what, name,
          err);
}

static void compare_resblock(int cin, int cout, int with_temb, float dropout, int training) {
    char what[96];
    snprintf(what, sizeof what, "resblock %d->%d%s dropout %g %s", cin, cout,
             with_temb ? " temb" : "", dropout, training ? "training" : "eval");
    Net *fused = resblock_net(cin, cout, with_temb, dropout, 0);
    Net *plain = resblock_net(cin, cout, with_temb, dropout, 1);
    CHECK(fused->num_parameters == plain->num_parameters && fused->n_params == plain->n_params,
          "%s: the same parameters", what);
    int fewer = 1 + (dropout > 0);   /* the skip add, the dropout */
    CHECK(fused->n_nodes == plain->n_nodes - fewer, "%s: %d nodes fused, %d plain", what,
          fused->n_nodes, plain->n_nodes);
    RngKey key = {123, 0, 7, 0};
    worst = 0;
    run(fused, training, key);
    run(plain, training, key);
    expect_close(what, "output", net_output_data(fused, "out"), net_output_data(plain, "out"),
                 numel(fused, "out", 0));
    expect_close(what, "dx", net_input_grad(fused, "x"), net_input_grad(plain, "x"),
                 numel(fused, "x", 1));
    if (with_temb)
        expect_close(what, "dtemb", net_input_grad(fused, "temb"), net_input_grad(plain, "temb"),
                     numel(fused, "temb", 1));
    for (int i = 0; i < fused->n_params && i < plain->n_params; i++) {
        const ParamInfo *p = &fused->params[i];
        CHECK(!strcmp(p->name, plain->params[i].name), "%s: parameter %d is %s in both", what, i,
              p->name);
        expect_close(what, p->name, fused->grads + p->offset, plain->grads + p->offset, p->numel);
    }
    printf("  %s: largest relative difference %.3g\n", what, worst);
    net_free(fused);
    net_free(plain);
}

/* x -> dropout -> SiLU: the dropout output's address and values by mode. */
static void test_eval_dropout_alias(void) {
    const float p = 0.5f;
    Net *net = net_create(backend_cpu(), B);
    int x = net_add_input(net, "x", NET_F32, H, W, 4, 1);
    int dropped = net_dropout(net, x, p);
    net_add_output(net, "out", net_silu(net, dropped));
    net_finish(net);
    size_t n = (size_t)B * net_per_sample(net, x), per = net_per_sample(net, x);
    RngKey key = {5, 0, 3, 0};

    run(net, 0, key);
    float *in = net_data(net, x);
    CHECK(net_data(net, dropped) == in, "eval: the dropout output is its input's memory");
    float *want = xmalloc(n * sizeof(float)), *grad = xmalloc(n * sizeof(float));
    backend_cpu()->silu_forward(want, in, n);
    CHECK(!memcmp(net_output_data(net, "out"), want, n * sizeof(float)),
          "eval: the output is SiLU of the input");
    backend_cpu()->silu_backward(grad, 0.0f, net_output_grad(net, "out"), in, n);
    CHECK(!memcmp(net_input_grad(net, "x"), grad, n * sizeof(float)),
          "eval: the gradient passes the dropout unchanged");

    run(net, 1, key);
    CHECK(net_data(net, dropped) != in, "training: the dropout output has its own buffer");
    RngKey layer0 = key;
    layer0.stream = RNG_STREAM_DROPOUT;
    backend_cpu()->dropout_forward(want, in, B, per, p, layer0);
    CHECK(!memcmp(net_data(net, dropped), want, n * sizeof(float)),
          "training: the output is dropout_forward's");
    size_t zeros = 0;
    for (size_t i = 0; i < n; i++) zeros += want[i] == 0.0f;
    CHECK(zeros > n / 4 && zeros < 3 * n / 4, "training: %zu of %zu dropped at p = %g", zeros, n,
          p);
    free(want);
    free(grad);
    net_free(net);
}

int main(void) {
    for (int training = 0; training < 2; training++) {
        compare_resblock(8, 8, 1, 0.3f, training);    /* skip into conv2 */
        compare_resblock(8, 12, 1, 0.3f, training);   /* skip into conv_shortcut */
    }
    compare_resblock(8, 8, 1, 0.0f, 1);              /* no dropout */
    compare_resblock(12, 8, 0, 0.0f, 1);             /* the VAE's: no time embedding */
    test_eval_dropout_alias();
    return test_summary("fusion");
}
