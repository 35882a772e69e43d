/* The CPU convolution's oneDNN path against its im2col oracle (cpu_conv_paths.h).
 *
 * Every distinct convolution shape of the networks the configs build (the pixel U-Nets
 * at 32x32 and 28x28, whose 7x7 level gives odd sizes and the downsamplers' asymmetric
 * (0, 1) padding at stride 2; the latent U-Net; the classifier; the KL autoencoders with
 * their 1x1 convolutions), plus hand-picked odd shapes, run on both paths from the same
 * random inputs: the forward output without and with a residual added (y = conv + b + r),
 * the input gradient with beta 0 and beta 1 (added to
 * a random gradient already there), and the weight and bias gradients must agree to
 * 1e-5 relative (max |a - b| / max |b|). Both paths also run at a batch smaller than the
 * prepared one, as the sampler's last chunk does. Without oneDNN in the build the
 * comparison is skipped, not passed. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "cpu_conv_paths.h"
#include "graph.h"
#include "models.h"
#include "philox.h"
#include "testing.h"
#include "util.h"

#define TOL 1e-5

static const char *const CONFIGS[] = {
    "configs/fashion_mnist.json",  "configs/fashion_mnist_cpu.json", "configs/cifar10_ddpm.json",
    "configs/fashion_ldm.json",    "configs/fashion_classifier.json", "configs/fashion_vae.json",
    "configs/cifar10_vae.json",
};

/* Shapes the networks do not have: odd sizes at every kernel, stride and padding. */
static const ConvShape EXTRA[] = {
    {.n = 3, .h = 5, .w = 7, .c = 3, .oc = 5, .kh = 3, .kw = 3, .stride = 1, .pad_top = 1,
     .pad_left = 1, .pad_bottom = 1, .pad_right = 1},
    {.n = 2, .h = 7, .w = 5, .c = 6, .oc = 4, .kh = 3, .kw = 3, .stride = 2, .pad_bottom = 1,
     .pad_right = 1},
    {.n = 2, .h = 9, .w = 9, .c = 5, .oc = 7, .kh = 1, .kw = 1, .stride = 2},
    {.n = 2, .h = 6, .w = 6, .c = 9, .oc = 3, .kh = 1, .kw = 1, .stride = 1},
};

enum { MAX_SHAPES = 256 };
static ConvShape shapes[MAX_SHAPES];
static int n_shapes;

static int same_conv(const ConvShape *a, const ConvShape *b) {
    return a->h == b->h && a->w == b->w && a->c == b->c && a->oc == b->oc && a->kh == b->kh &&
           a->kw == b->kw && a->stride == b->stride && a->pad_top == b->pad_top &&
           a->pad_left == b->pad_left && a->pad_bottom == b->pad_bottom &&
           a->pad_right == b->pad_right;
}

static void add_shape(ConvShape s, int n) {
    for (int i = 0; i < n_shapes; i++)
        if (same_conv(&shapes[i], &s)) return;
    if (n_shapes == MAX_SHAPES) die("test_cpu_conv: more than %d shapes", MAX_SHAPES);
    s.n = n;
    conv_shape_finish(&s);
    shapes[n_shapes++] = s;
}

static void collect_network_shapes(void) {
    for (size_t i = 0; i < sizeof CONFIGS / sizeof CONFIGS[0]; i++) {
        Config cfg;
        char err[1024];
        config_defaults(&cfg);
        if (config_load_file(&cfg, CONFIGS[i], err, sizeof err) != 0) die("%s", err);
        Net *net = model_build(backend_cpu(), &cfg, 2, 0);
        int count;
        ConvShape *found = net_conv_shapes(net, &count);
        for (int k = 0; k < count; k++) add_shape(found[k], 2);
        free(found);
        net_free(net);
    }
    for (size_t i = 0; i < sizeof EXTRA / sizeof EXTRA[0]; i++) add_shape(EXTRA[i], EXTRA[i].n);
}

static float *random_floats(size_t n, uint32_t stream) {
    float *x = xmalloc(n * sizeof(float));
    RngKey key = {2024, stream, 0, 0};
    for (size_t i = 0; i < n; i++) x[i] = philox_uniform(key, 0, i) * 2.0f - 1.0f;
    return x;
}

typedef struct {
    float *y, *y_res, *dx0, *dx1, *dw, *db;   /* y_res: the forward with a residual */
} ConvResults;

static ConvResults run_path(CpuConvPath path, const ConvShape *prepared, int n, const float *x,
                            const float *w, const float *b, const float *dy,
                            const float *dx_before, const float *residual) {
    ConvShape s = *prepared;
    size_t in = (size_t)n * s.h * s.w * s.c, out = (size_t)n * s.oh * s.ow * s.oc;
    size_t weights = (size_t)s.oc * s.kh * s.kw * s.c;
    cpu_conv_set_path(path);
    cpu_conv2d_prepare(&s);
    void *ws = xmalloc(s.workspace_bytes + 64);
    s.n = n;
#ifdef DDPM_ONEDNN
    /* otherwise the dispatch would fall back to im2col and compare it with itself */
    if (path == CONV_PATH_ONEDNN)
        CHECK(onednn_conv_workspace(&s) <= s.workspace_bytes,
              "the oneDNN path would not run at batch %d of a conv prepared for %d", n,
              prepared->n);
#endif
    ConvResults r = {xmalloc(out * 4), xmalloc(out * 4), xmalloc(in * 4), xmalloc(in * 4),
                     xmalloc(weights * 4), xmalloc((size_t)s.oc * 4)};
    memcpy(r.dx1, dx_before, in * 4);
    cpu_conv2d_forward(&s, r.y, x, w, b, NULL, ws);
    cpu_conv2d_forward(&s, r.y_res, x, w, b, residual, ws);
    cpu_conv2d_backward(&s, r.dx0, 0.0f, r.dw, r.db, dy, x, w, ws);
    cpu_conv2d_backward(&s, r.dx1, 1.0f, r.dw, r.db, dy, x, w, ws);
    free(ws);
    return r;
}

static void free_results(ConvResults *r) {
    free(r->y), free(r->y_res), free(r->dx0), free(r->dx1), free(r->dw), free(r->db);
}

static void describe(char *text, size_t size, const ConvShape *s, int n) {
    snprintf(text, size, "n%d %dx%dx%d -> %d, %dx%d s%d pad (%d,%d,%d,%d)", n, s->h, s->w, s->c,
             s->oc, s->kh, s->kw, s->stride, s->pad_top, s->pad_left, s->pad_bottom,
             s->pad_right);
}

/* Both paths on one shape at batch n (<= s->n); returns the worst relative error. */
static double compare_shape(const ConvShape *s, int n) {
    size_t in = (size_t)n * s->h * s->w * s->c, out = (size_t)n * s->oh * s->ow * s->oc;
    size_t weights = (size_t)s->oc * s->kh * s->kw * s->c;
    float *x = random_floats(in, 1), *w = random_floats(weights, 2);
    float *b = random_floats((size_t)s->oc, 3), *dy = random_floats(out, 4);
    float *dx_before = random_floats(in, 5), *residual = random_floats(out, 6);
    ConvResults ref = run_path(CONV_PATH_IM2COL, s, n, x, w, b, dy, dx_before, residual);
    ConvResults got = run_path(CONV_PATH_ONEDNN, s, n, x, w, b, dy, dx_before, residual);
    const double err[6] = {rel_error(got.y, ref.y, out, 0), rel_error(got.y_res, ref.y_res, out, 0),
                           rel_error(got.dx0, ref.dx0, in, 0), rel_error(got.dx1, ref.dx1, in, 0),
                           rel_error(got.dw, ref.dw, weights, 0),
                           rel_error(got.db, ref.db, (size_t)s->oc, 0)};
    static const char *const what[6] = {"y", "y + residual", "dx (beta 0)", "dx (beta 1)", "dw",
                                        "db"};
    char text[128];
    describe(text, sizeof text, s, n);
    double worst = 0;
    for (int i = 0; i < 6; i++) {
        CHECK(err[i] <= TOL, "%s: %s differs from im2col by %.3g relative", text, what[i], err[i]);
        if (!(err[i] <= worst)) worst = err[i];
    }
    free_results(&ref);
    free_results(&got);
    free(x), free(w), free(b), free(dy), free(dx_before), free(residual);
    return worst;
}

int main(void) {
    if (cpu_conv_set_path(CONV_PATH_ONEDNN) != 0) {
        SKIP("this build has no oneDNN: nothing to compare with im2col");
        test_summary("test_cpu_conv");
        return 77;   /* tests/run_tests.sh: skipped, not passed */
    }
    collect_network_shapes();
    double worst = 0;
    for (int i = 0; i < n_shapes; i++) {
        double e = compare_shape(&shapes[i], shapes[i].n);
        if (!(e <= worst)) worst = e;
        if (shapes[i].n > 1) {   /* a smaller batch than the prepared one */
            e = compare_shape(&shapes[i], shapes[i].n - 1);
            if (!(e <= worst)) worst = e;
        }
    }
    printf("%d shapes, worst relative difference %.3g (tolerance %g)\n", n_shapes, worst, TOL);
    CHECK(n_shapes >= 30, "only %d shapes collected from the networks", n_shapes);
    return test_summary("test_cpu_conv");
}
