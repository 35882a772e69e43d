/* `ddpm eval`: the variational bound in bits/dim on a test set (Ho et al. 2020, eq. 5):
 * L = L_T (prior) + sum_{t>0} L_{t-1} (KLs) + L_0 (decoder), either summed over every t
 * or estimated without bias from K random timesteps per image (L_T + T * mean_k L_{t_k}). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "guidance.h"
#include "eval.h"
#include "sample.h"
#include "util.h"

typedef struct {
    const char *ckpt, *data, *csv;
    int n, batch, mc;
    unsigned long long seed;
} EvalArgs;

typedef struct {
    Inference inf;
    DeviceSchedule schedule;
    const Backend *be;
    uint8_t *images;            /* (B, H, W, C) backend */
    float *target, *x0;         /* (B, D) backend */
    float *mse, *vb;            /* (B) backend */
    int32_t *t;                 /* (B) backend: the timesteps the loss gathers by */
    float *host_x0, *host_vb, *host_mse;
    int32_t *host_t;
    float *host_time;           /* host_t as the network's float time input */
    double *vb_sum, *mse_sum;   /* (T) sums over images of L_t and the MSE, full bound */
    double prior_sum, total_sum;
    int images_done;
} Evaluator;

static void usage(void) {
    fprintf(stderr,
            "usage: ddpm eval --ckpt FILE --data PATH [--n N] [--batch B] [--mc K] [--csv FILE]\n"
            "                 [--seed S]\n"
            "  PATH: an IDX image file (e.g. .../fashion-mnist/t10k-images-idx3-ubyte.gz) or a\n"
            "  CIFAR-10 batches directory (its test_batch.bin). Without --mc every timestep is\n"
            "  evaluated and the per-term breakdown is written as CSV (default: eval_terms.csv).\n");
}

static EvalArgs parse_args(int argc, char **argv) {
    EvalArgs a = {.n = 1000, .csv = "eval_terms.csv"};
    static const struct option options[] = {
        {"ckpt", required_argument, 0, 'c'}, {"data", required_argument, 0, 'D'},
        {"n", required_argument, 0, 'n'},    {"batch", required_argument, 0, 'b'},
        {"mc", required_argument, 0, 'k'},   {"csv", required_argument, 0, 'o'},
        {"seed", required_argument, 0, 's'}, {"device", required_argument, 0, 'd'},
        {"help", no_argument, 0, 'h'},       {0, 0, 0, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'c': a.ckpt = optarg; break;
        case 'D': a.data = optarg; break;
        case 'n': a.n = (int)parse_long_flag("--n", optarg, 1, 100000000); break;
        case 'b': a.batch = (int)parse_long_flag("--batch", optarg, 1, 65536); break;
        case 'k': a.mc = (int)parse_long_flag("--mc", optarg, 0, 1000000); break;
        case 'o': a.csv = optarg; break;
        case 's':
            a.seed = (unsigned long long)parse_long_flag("--seed", optarg, 0, 1L << 62);
            break;
        case 'd': break;
        case 'h': usage(); exit(0);
        default: usage(); exit(2);
        }
    }
    if (!a.ckpt || !a.data) {
        usage();
        die("eval: --ckpt and --data are required");
    }
    return a;
}

static void load_test_set(Dataset *d, const Config *c, const char *path, int n) {
    char err[1024];
    if (dataset_load_configured(d, c, path, 1, n, err, sizeof err) != 0) die("%s", err);
    if (d->height != c->image_size || d->channels != c->in_channels)
        die("%s: images are %dx%dx%d, the checkpoint's model wants %dx%dx%d", path, d->height,
            d->width, d->channels, c->image_size, c->image_size, c->in_channels);
}

/* L_t in bits/dim (and the MSE) for each sample of the batch at timesteps host_t. */
static void vb_terms(Evaluator *ev, int n, uint64_t seed, uint32_t noise_step) {
    const Config *c = &ev->inf.cfg;
    Net *m = ev->inf.model;
    const Backend *be = ev->be;
    float *x_t = net_data(m, net_input(m, "sample"));
    be->to_device(ev->t, ev->host_t, (size_t)n * sizeof(int32_t));
    for (int i = 0; i < n; i++) ev->host_time[i] = (float)ev->host_t[i];
    be->to_device(net_input_data(m, "timestep"), ev->host_time, (size_t)n * sizeof(float));
    RngKey eps_key = {seed, RNG_STREAM_EPS, noise_step, 0}, no_flip = {0};
    be->q_sample_images(x_t, ev->target, ev->x0, ev->images, ev->t, ev->schedule.sqrt_ac,
                        ev->schedule.sqrt_1m_ac, n, c->image_size, c->image_size, c->in_channels,
                        ev->inf.diffusion.pred, 0, no_flip, eps_key);
    m->training = 0;
    net_forward(m, n, NULL, (RngKey){0});
    LossSpec spec = {.learned_var = c->learn_sigma, .clip_x0 = 1, .vb_weight = 1};
    be->diffusion_loss(ev->mse, ev->vb, NULL, net_data(m, net_output(m, "sample")), ev->target,
                       ev->x0, x_t, ev->t, NULL, n, c->image_size * c->image_size, c->in_channels,
                       spec, ev->schedule.tables);
    be->to_host(ev->host_vb, ev->vb, (size_t)n * sizeof(float));
    be->to_host(ev->host_mse, ev->mse, (size_t)n * sizeof(float));
}

static void priors(Evaluator *ev, int n, double *prior) {
    size_t D = ev->inf.denoiser.base.sample_size;
    for (int i = 0; i < n; i++) ev->host_t[i] = 0;
    vb_terms(ev, n, 0, 0);
    ev->be->to_host(ev->host_x0, ev->x0, (size_t)n * D * sizeof(float));
    for (int i = 0; i < n; i++) prior[i] = prior_bpd(&ev->inf.diffusion, ev->host_x0 + i * D, D);
}

static void evaluate_batch(Evaluator *ev, const EvalArgs *a, int n, int batch_index) {
    int T = ev->inf.diffusion.num_timesteps;
    double *bound = xcalloc((size_t)n, sizeof(double));
    priors(ev, n, bound);
    for (int i = 0; i < n; i++) ev->prior_sum += bound[i];
    if (a->mc == 0) {
        for (int t = T - 1; t >= 0; t--) {
            for (int i = 0; i < n; i++) ev->host_t[i] = t;
            vb_terms(ev, n, a->seed, (uint32_t)t);
            for (int i = 0; i < n; i++) {
                bound[i] += ev->host_vb[i];
                ev->vb_sum[t] += ev->host_vb[i];
                ev->mse_sum[t] += ev->host_mse[i];
            }
        }
    } else {
        for (int k = 0; k < a->mc; k++) {
            uint32_t step = (uint32_t)(batch_index * a->mc + k);
            RngKey t_key = {a->seed, RNG_STREAM_TIMESTEP, step, 0};
            for (int i = 0; i < n; i++) ev->host_t[i] = (int32_t)philox_below(t_key, (uint32_t)i, 0, (uint32_t)T);
            vb_terms(ev, n, a->seed, step);
            for (int i = 0; i < n; i++) bound[i] += (double)T * ev->host_vb[i] / a->mc;
        }
    }
    for (int i = 0; i < n; i++) ev->total_sum += bound[i];
    ev->images_done += n;
    free(bound);
}

static void write_csv(const Evaluator *ev, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) die("%s: cannot open for writing", path);
    int T = ev->inf.diffusion.num_timesteps;
    double n = ev->images_done;
    fprintf(f, "term,t,bits_per_dim,mse\n");
    fprintf(f, "prior,%d,%.9g,\n", T, ev->prior_sum / n);
    for (int t = T - 1; t >= 0; t--)
        fprintf(f, "%s,%d,%.9g,%.9g\n", t ? "kl" : "decoder", t, ev->vb_sum[t] / n,
                ev->mse_sum[t] / n);
    fclose(f);
    fprintf(stderr, "wrote %s\n", path);
}

static void evaluator_init(Evaluator *ev, const Backend *be, const char *ckpt, int batch) {
    memset(ev, 0, sizeof *ev);
    ev->be = be;
    inference_load(&ev->inf, ckpt, be, batch);
    if (ev->inf.cfg.objective != OBJECTIVE_DDPM)
        die("%s: eval computes DDPM bits/dim, and this checkpoint is objective=%s", ckpt,
            config_enum_name("objective", ev->inf.cfg.objective));
    device_schedule_init(&ev->schedule, be, &ev->inf.diffusion);
    size_t D = ev->inf.denoiser.base.sample_size;
    int T = ev->inf.diffusion.num_timesteps;
    ev->t = be->alloc((size_t)batch * sizeof(int32_t));
    ev->images = be->alloc((size_t)batch * D);
    ev->target = be->alloc((size_t)batch * D * sizeof(float));
    ev->x0 = be->alloc((size_t)batch * D * sizeof(float));
    ev->mse = be->alloc((size_t)batch * sizeof(float));
    ev->vb = be->alloc((size_t)batch * sizeof(float));
    ev->host_x0 = xmalloc((size_t)batch * D * sizeof(float));
    ev->host_vb = xmalloc((size_t)batch * sizeof(float));
    ev->host_mse = xmalloc((size_t)batch * sizeof(float));
    ev->host_t = xmalloc((size_t)batch * sizeof(int32_t));
    ev->host_time = xmalloc((size_t)batch * sizeof(float));
    ev->vb_sum = xcalloc((size_t)T, sizeof(double));
    ev->mse_sum = xcalloc((size_t)T, sizeof(double));
}

static void evaluator_free(Evaluator *ev) {
    const Backend *be = ev->be;
    be->release(ev->images);
    be->release(ev->target);
    be->release(ev->x0);
    be->release(ev->mse);
    be->release(ev->vb);
    be->release(ev->t);
    free(ev->host_x0);
    free(ev->host_vb);
    free(ev->host_mse);
    free(ev->host_t);
    free(ev->host_time);
    free(ev->vb_sum);
    free(ev->mse_sum);
    device_schedule_free(&ev->schedule);
    inference_free(&ev->inf);
}

int eval_main(int argc, char **argv, const Backend *be) {
    EvalArgs a = parse_args(argc, argv);
    int batch = a.batch ? a.batch : (a.n < 64 ? a.n : 64);
    Evaluator ev;
    evaluator_init(&ev, be, a.ckpt, batch);
    Dataset data;
    load_test_set(&data, &ev.inf.cfg, a.data, a.n);
    char err[1024];
    if (ev.inf.cfg.num_class_embeds > 0 &&
        dataset_check_classes(&data, a.data,
                              config_num_classes(&ev.inf.cfg), err, sizeof err) != 0)
        die("%s", err);
    size_t D = ev.inf.denoiser.base.sample_size;
    double started = now_seconds();
    for (int first = 0, b = 0; first < data.count; first += batch, b++) {
        int n = data.count - first < batch ? data.count - first : batch;
        be->to_device(ev.images, data.images + (size_t)first * D, (size_t)n * D);
        /* a class-conditional model is scored on each image's own class: the bound on
         * -log p(x | y) */
        if (ev.inf.cfg.num_class_embeds > 0)
            be->to_device(net_input_data(ev.inf.model, "class_labels"), data.labels + first,
                          (size_t)n * sizeof(int32_t));
        evaluate_batch(&ev, &a, n, b);
        fprintf(stderr, "\r%d/%d images, %.4f bits/dim so far", ev.images_done, data.count,
                ev.total_sum / ev.images_done);
    }
    fprintf(stderr, " (%.1f s)\n", now_seconds() - started);
    double n = ev.images_done;
    printf("images: %d\n", ev.images_done);
    printf("%s: %.6f bits/dim\n", a.mc ? "bound (Monte Carlo estimate)" : "bound (every timestep)",
           ev.total_sum / n);
    printf("prior L_T: %.6f bits/dim\n", ev.prior_sum / n);
    if (a.mc == 0) {
        double kl = 0;
        for (int t = 1; t < ev.inf.diffusion.num_timesteps; t++) kl += ev.vb_sum[t];
        printf("sum of KL terms L_1..L_{T-1}: %.6f bits/dim\n", kl / n);
        printf("decoder L_0: %.6f bits/dim\n", ev.vb_sum[0] / n);
        write_csv(&ev, a.csv);
    }
    dataset_free(&data);
    evaluator_free(&ev);
    return 0;
}
