/* Ancestral sampling: x_T ~ N(0, I), then for t = T-1 .. 0 one model call and one
 * fused update x_{t-1} = coef1*x0 + coef2*x_t + sigma_t*z (Algorithm 2). */
#include "sample.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "image_io.h"
#include "util.h"

/* The chunk index is folded into the stream so that chunks draw distinct noise. */
static RngKey chunk_key(uint64_t seed, uint32_t stream, int chunk, int t) {
    RngKey key = {seed, stream + ((uint32_t)chunk << 8), (uint32_t)t};
    return key;
}

static void sample_chunk(UNet *m, const GaussianDiffusion *d, int n, int chunk, uint64_t seed,
                         int clip, int verbose) {
    const Backend *be = m->be;
    float *x = unet_input(m);
    size_t D = unet_sample_size(m);
    be->normal_fill(x, n, D, chunk_key(seed, RNG_STREAM_SAMPLE_XT, chunk, 0));
    int32_t *t_host = xmalloc((size_t)n * sizeof(int32_t));
    double started = now_seconds();
    RngKey no_dropout = {0};
    for (int t = d->num_timesteps - 1; t >= 0; t--) {
        for (int i = 0; i < n; i++) t_host[i] = t;
        be->to_device(m->timesteps, t_host, (size_t)n * sizeof(int32_t));
        unet_forward(m, n, no_dropout);
        be->sample_update(x, unet_output(m), n, D, p_sample_update(d, t, clip),
                          chunk_key(seed, RNG_STREAM_SAMPLE_Z, chunk, t));
        if (verbose && (t % 100 == 0)) {
            double elapsed = now_seconds() - started;
            fprintf(stderr, "\rsampling chunk %d: t=%4d  %.1f steps/s", chunk, t,
                    (d->num_timesteps - t) / (elapsed > 0 ? elapsed : 1e-9));
        }
    }
    if (verbose) fputc('\n', stderr);
    free(t_host);
}

void sample_images(UNet *m, const GaussianDiffusion *d, int n, uint64_t seed, int clip_denoised,
                   float *out, int verbose) {
    size_t D = unet_sample_size(m);
    int was_training = m->training;
    m->training = 0;
    for (int first = 0, chunk = 0; first < n; first += m->max_batch, chunk++) {
        int count = n - first < m->max_batch ? n - first : m->max_batch;
        sample_chunk(m, d, count, chunk, seed, clip_denoised, verbose);
        m->be->to_host(out + (size_t)first * D, unet_input(m), (size_t)count * D * sizeof(float));
    }
    m->be->synchronize();
    m->training = was_training;
}

typedef struct {
    const char *ckpt, *out_dir;
    int n, batch, clip;
    unsigned long long seed;
} SampleArgs;

static void sample_usage(void) {
    fprintf(stderr,
            "usage: ddpm sample --ckpt FILE [--n N] [--out DIR] [--seed S] [--batch B] [--clip 0|1]\n"
            "  writes DIR/samples.png (a grid) and DIR/samples.npz (arr_0: uint8 N,H,W,C)\n");
}

static long parse_int_arg(const char *flag, const char *text, long lo, long hi) {
    char *end;
    long v = strtol(text, &end, 10);
    if (*text == 0 || *end != 0 || v < lo || v > hi)
        die("%s: expected an integer in [%ld, %ld], got '%s'", flag, lo, hi, text);
    return v;
}

static SampleArgs parse_sample_args(int argc, char **argv) {
    SampleArgs a = {.out_dir = "samples", .n = 16, .batch = 0, .clip = -1};
    static const struct option options[] = {
        {"ckpt", required_argument, 0, 'c'}, {"n", required_argument, 0, 'n'},
        {"out", required_argument, 0, 'o'},  {"seed", required_argument, 0, 's'},
        {"batch", required_argument, 0, 'b'}, {"clip", required_argument, 0, 'l'},
        {"device", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'c': a.ckpt = optarg; break;
        case 'n': a.n = (int)parse_int_arg("--n", optarg, 1, 1000000); break;
        case 'o': a.out_dir = optarg; break;
        case 's': a.seed = (unsigned long long)parse_int_arg("--seed", optarg, 0, 1L << 62); break;
        case 'b': a.batch = (int)parse_int_arg("--batch", optarg, 1, 65536); break;
        case 'l': a.clip = (int)parse_int_arg("--clip", optarg, 0, 1); break;
        case 'd': break;   /* handled by main */
        case 'h': sample_usage(); exit(0);
        default: sample_usage(); exit(2);
        }
    }
    if (optind < argc) die("sample: unexpected argument '%s'", argv[optind]);
    if (!a.ckpt) {
        sample_usage();
        die("sample: --ckpt is required");
    }
    return a;
}

static void write_outputs(const SampleArgs *a, const Config *cfg, const float *images) {
    size_t D = (size_t)cfg->image_size * cfg->image_size * cfg->in_channels;
    uint8_t *pixels = xmalloc((size_t)a->n * D);
    images_to_u8(pixels, images, (size_t)a->n * D);
    char err[1024], path[1024];
    if (make_dirs(a->out_dir, err, sizeof err) != 0) die("%s", err);
    snprintf(path, sizeof path, "%s/samples.png", a->out_dir);
    if (write_png_grid(path, pixels, a->n, cfg->image_size, cfg->image_size, cfg->in_channels,
                       err, sizeof err) != 0)
        die("%s", err);
    fprintf(stderr, "wrote %s\n", path);
    snprintf(path, sizeof path, "%s/samples.npz", a->out_dir);
    if (write_npz_u8(path, pixels, a->n, cfg->image_size, cfg->image_size, cfg->in_channels, err,
                     sizeof err) != 0)
        die("%s", err);
    fprintf(stderr, "wrote %s\n", path);
    free(pixels);
}

int sample_main(int argc, char **argv, const Backend *be) {
    SampleArgs a = parse_sample_args(argc, argv);
    Config cfg;
    char err[1024];
    config_defaults(&cfg);
    if (checkpoint_read_config(a.ckpt, &cfg, err, sizeof err) != 0) die("%s", err);
    if (config_validate(&cfg, err, sizeof err) != 0) die("%s: %s", a.ckpt, err);
    GaussianDiffusion d;
    if (diffusion_init(&d, cfg.beta_schedule, cfg.timesteps, prediction_from_name(cfg.prediction),
                       variance_from_name(cfg.variance), err, sizeof err) != 0)
        die("%s: %s", a.ckpt, err);
    int batch = a.batch ? a.batch : (a.n < 64 ? a.n : 64);
    UNet *m = unet_create(be, &cfg, batch);
    float *bufs[CKPT_BUFFERS] = {NULL, m->weights, NULL, NULL};
    if (checkpoint_read(a.ckpt, m, bufs, NULL, err, sizeof err) != 0) die("%s", err);
    int clip = a.clip >= 0 ? a.clip : cfg.clip_denoised;
    fprintf(stderr, "sampling %d images with %d steps, batch %d, seed %llu, backend %s\n", a.n,
            cfg.timesteps, batch, a.seed, be->name);
    float *images = xmalloc((size_t)a.n * unet_sample_size(m) * sizeof(float));
    sample_images(m, &d, a.n, a.seed, clip, images, 1);
    write_outputs(&a, &cfg, images);
    free(images);
    unet_free(m);
    diffusion_free(&d);
    return 0;
}
