/* `ddpm evaluate`: class-aware scores of generated samples, since FID's Inception weights
 * cannot be downloaded everywhere. A clean classifier (classifier.h, at t = 0) gives
 *  - the class accuracy of the samples against their intended labels (arr_1), and
 *  - the Frechet distance (frechet.h) between its penultimate features of the samples and
 *    of the test set, with its floor: one half of the test set against the other, at the
 *    same number of images. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "classifier.h"
#include "data.h"
#include "frechet.h"
#include "npz.h"
#include "util.h"

typedef struct {
    const char *classifier, *samples, *data, *json;
    int n, batch, t, crop;
} EvaluateArgs;

static void usage(FILE *to) {
    fprintf(to,
            "usage: ddpm evaluate --classifier CKPT --samples FILE.npz [--data PATH] [--n N]\n"
            "                     [--t T] [--batch B] [--crop] [--json FILE] [--device cpu|cuda]\n"
            "  Scores samples (arr_0 uint8 N,H,W,C; arr_1 labels, optional) with a classifier\n"
            "  checkpoint (objective=classifier, e.g. configs/fashion_classifier_clean):\n"
            "  accuracy against arr_1, and the Frechet distance of the classifier's pooled\n"
            "  features to the test set, with its floor (test half against test half).\n"
            "  PATH: the test images (default: the classifier's data_path with 'train-images'\n"
            "  replaced by 't10k-images', or CIFAR-10's test_batch.bin). --n: at most N samples\n"
            "  (default all). --t: the classifier's timestep (default 0: clean images).\n"
            "  --crop: center-crop larger samples to the classifier's size (a model of 28x28\n"
            "  images padded to 32x32, such as configs/fashion_vae's latent pipeline).\n"
            "  Prints a summary and one JSON line; --json also writes that line to FILE.\n");
}

static EvaluateArgs parse_args(int argc, char **argv) {
    EvaluateArgs a = {.batch = 250};
    static const struct option options[] = {
        {"classifier", required_argument, 0, 'c'}, {"samples", required_argument, 0, 's'},
        {"data", required_argument, 0, 'D'},       {"n", required_argument, 0, 'n'},
        {"t", required_argument, 0, 't'},          {"batch", required_argument, 0, 'b'},
        {"json", required_argument, 0, 'j'},       {"device", required_argument, 0, 'd'},
        {"crop", no_argument, 0, 'x'},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'c': a.classifier = optarg; break;
        case 's': a.samples = optarg; break;
        case 'D': a.data = optarg; break;
        case 'n': a.n = (int)parse_long_flag("--n", optarg, 2, 100000000); break;
        case 't': a.t = (int)parse_long_flag("--t", optarg, 0, 100000); break;
        case 'b': a.batch = (int)parse_long_flag("--batch", optarg, 1, 65536); break;
        case 'j': a.json = optarg; break;
        case 'x': a.crop = 1; break;
        case 'd': break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc) die("evaluate: unexpected argument '%s'", argv[optind]);
    if (!a.classifier || !a.samples) {
        usage(stderr);
        die("evaluate: --classifier and --samples are required");
    }
    return a;
}

typedef struct {
    Net *net;
    Config cfg;
    int features;               /* the pooled features' tensor */
    int dim;                    /* their channels */
    float *host_x;              /* (batch, D) */
    float *host_t;              /* (batch) */
} Scorer;

/* Features (n, dim) and predicted classes (n) of n uint8 images (n, H, W, C). */
static void score(Scorer *s, const uint8_t *images, int n, int t, float *features,
                  int32_t *predicted) {
    const Backend *be = s->net->be;
    const int batch = s->net->max_batch, classes = s->cfg.num_classes;
    const size_t D = net_per_sample(s->net, net_input(s->net, "sample"));
    float *logits = xmalloc((size_t)batch * classes * sizeof(float));
    s->net->training = 0;
    for (int first = 0; first < n; first += batch) {
        int b = n - first < batch ? n - first : batch;
        for (size_t i = 0; i < (size_t)b * D; i++)
            s->host_x[i] = images[(size_t)first * D + i] / 127.5f - 1.0f;
        for (int i = 0; i < b; i++) s->host_t[i] = (float)t;
        be->to_device(net_input_data(s->net, "sample"), s->host_x, (size_t)b * D * sizeof(float));
        be->to_device(net_input_data(s->net, "timestep"), s->host_t, (size_t)b * sizeof(float));
        net_forward(s->net, b, NULL, (RngKey){0});
        be->to_host(features + (size_t)first * s->dim, net_data(s->net, s->features),
                    (size_t)b * s->dim * sizeof(float));
        be->to_host(logits, net_output_data(s->net, "logits"), (size_t)b * classes * sizeof(float));
        for (int i = 0; i < b; i++) {
            const float *z = logits + (size_t)i * classes;
            int best = 0;
            for (int k = 1; k < classes; k++)
                if (z[k] > z[best]) best = k;
            predicted[first + i] = best;
        }
    }
    free(logits);
}

/* The classifier's test set: --data, or its training path with train -> t10k. */
static void load_test_set(Dataset *d, const Config *c, const char *path) {
    char err[1024], derived[CONFIG_STR + 16];
    if (!path) {
        const char *at = strstr(c->data_path, "train-images");
        if (c->dataset != DATASET_CIFAR10 && !at)
            die("evaluate: the classifier's data_path %s names no train-images file: give the "
                "test images with --data", c->data_path);
        snprintf(derived, sizeof derived, "%.*st10k-images%s", (int)(at ? at - c->data_path : 0),
                 c->data_path, at ? at + strlen("train-images") : "");
        path = c->dataset == DATASET_CIFAR10 ? c->data_path : derived;
    }
    if (dataset_load_configured(d, c, path, 1, 0, err, sizeof err) != 0) die("%s", err);
    if (d->height != c->image_size || d->channels != c->in_channels || !d->images)
        die("%s: images are %dx%dx%d, the classifier wants %dx%dx%d", path, d->height, d->width,
            d->channels, c->image_size, c->image_size, c->in_channels);
    if (d->count < 4) die("%s: %d test images are too few for a Frechet distance", path, d->count);
}

/* The centre size x size of every image, in place. */
static void center_crop(NpzSamples *s, int size) {
    const int top = (s->h - size) / 2, left = (s->w - size) / 2, c = s->c;
    uint8_t *out = s->images;
    for (int i = 0; i < s->n; i++)
        for (int y = 0; y < size; y++) {
            const uint8_t *row = s->images + (((size_t)i * s->h + top + y) * s->w + left) * c;
            memmove(out, row, (size_t)size * c);
            out += (size_t)size * c;
        }
    s->h = s->w = size;
}

static void check_samples(const NpzSamples *s, const char *path, const Config *c) {
    if (s->h != c->image_size || s->w != c->image_size || s->c != c->in_channels)
        die("%s: samples are %dx%dx%d, the classifier wants %dx%dx%d", path, s->h, s->w, s->c,
            c->image_size, c->image_size, c->in_channels);
    for (int i = 0; s->labels && i < s->n; i++)
        if (s->labels[i] >= c->num_classes)
            die("%s: label %d of sample %d is outside the classifier's %d classes", path,
                s->labels[i], i, c->num_classes);
}

int evaluate_main(int argc, char **argv, const Backend *be) {
    EvaluateArgs a = parse_args(argc, argv);
    char err[1024];
    NpzSamples samples;
    if (npz_read_samples(a.samples, &samples, err, sizeof err) != 0) die("%s", err);
    Scorer s = {0};
    s.net = classifier_load(a.classifier, be, a.batch, 0, &s.cfg, &s.features);
    s.dim = net_channels(s.net, s.features);
    if (a.crop && samples.h >= s.cfg.image_size && samples.w >= s.cfg.image_size)
        center_crop(&samples, s.cfg.image_size);
    check_samples(&samples, a.samples, &s.cfg);
    Dataset test;
    load_test_set(&test, &s.cfg, a.data);
    const int n = a.n && a.n < samples.n ? a.n : samples.n, half = test.count / 2;
    const int n_fd = n < half ? n : half;   /* samples and each reference half alike */
    size_t D = (size_t)samples.h * samples.w * samples.c;
    s.host_x = xmalloc((size_t)a.batch * D * sizeof(float));
    s.host_t = xmalloc((size_t)a.batch * sizeof(float));
    float *f_samples = xmalloc((size_t)n * s.dim * sizeof(float));
    float *f_ref = xmalloc((size_t)n_fd * s.dim * sizeof(float));
    float *f_other = xmalloc((size_t)n_fd * s.dim * sizeof(float));
    int32_t *predicted = xmalloc((size_t)n * sizeof(int32_t));
    int32_t *ignored = xmalloc((size_t)n_fd * sizeof(int32_t));
    score(&s, samples.images, n, a.t, f_samples, predicted);
    score(&s, test.images, n_fd, a.t, f_ref, ignored);
    score(&s, test.images + (size_t)half * D, n_fd, a.t, f_other, ignored);
    double fd = frechet_distance_of(f_samples, n_fd, f_ref, n_fd, s.dim);
    double floor = frechet_distance_of(f_other, n_fd, f_ref, n_fd, s.dim);
    if (fd < 0 || floor < 0) die("evaluate: LAPACK's eigensolver failed on the covariances");
    int correct = 0;
    for (int i = 0; samples.labels && i < n; i++) correct += predicted[i] == samples.labels[i];
    char accuracy[32] = "null";
    if (samples.labels) snprintf(accuracy, sizeof accuracy, "%.4f", (double)correct / n);
    printf("%s: %d samples; accuracy %s%s; Frechet distance %.4f (floor %.4f: test half "
           "against test half), %d images each, %d features at t = %d\n",
           a.samples, n, accuracy, samples.labels ? "" : " (no labels in arr_1)", fd, floor, n_fd,
           s.dim, a.t);
    char line[2048];
    snprintf(line, sizeof line,
             "{\"samples\": \"%s\", \"classifier\": \"%s\", \"n\": %d, \"accuracy\": %s, "
             "\"frechet\": %.6f, \"frechet_floor\": %.6f, \"frechet_n\": %d, \"features\": %d, "
             "\"t\": %d}\n", a.samples, a.classifier, n, accuracy, fd, floor, n_fd, s.dim, a.t);
    fputs(line, stdout);
    if (a.json && write_file_atomic(a.json, line, strlen(line), err, sizeof err) != 0)
        die("%s", err);
    free(f_samples), free(f_ref), free(f_other), free(predicted), free(ignored);
    free(s.host_x), free(s.host_t);
    net_free(s.net);
    dataset_free(&test);
    npz_samples_free(&samples);
    return 0;
}

Net *classifier_load(const char *ckpt, const Backend *be, int max_batch, int input_grad,
                     Config *cfg, int *features) {
    char err[1024];
    config_defaults(cfg);
    if (checkpoint_read_config(ckpt, cfg, err, sizeof err) != 0) die("%s", err);
    if (config_validate(cfg, err, sizeof err) != 0) die("%s: %s", ckpt, err);
    if (cfg->objective != OBJECTIVE_CLASSIFIER)
        die("%s: a %s checkpoint, not a classifier (objective=classifier)", ckpt,
            config_enum_name("objective", cfg->objective));
    Net *net = classifier_build(be, cfg, max_batch, input_grad, features);
    float *bufs[CKPT_BUFFERS] = {NULL, net->weights, NULL, NULL};
    if (checkpoint_read(ckpt, net, bufs, NULL, err, sizeof err) != 0) die("%s", err);
    return net;
}
