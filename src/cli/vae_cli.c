/* `ddpm encode`: a data set through a KL autoencoder's encoder into a latent file that
 * `ddpm train dataset=latents` reads: tensor "latents" F32 (N, h, w, latent_channels),
 * scaled by scaling_factor, and "labels" I32 (N) when the data has them. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "latent.h"
#include "safetensors.h"
#include "util.h"

/* LDM measures the factor on one batch; the issue asks for at least this many images. */
enum { MIN_SCALE_IMAGES = 2000 };

typedef struct {
    const char *vae, *out, *data;
    int limit, sample, batch;
    unsigned long long seed;
    double scaling_factor;   /* 0: measure it */
} EncodeArgs;

static void usage(void) {
    fprintf(stderr,
            "usage: ddpm encode --vae FILE --out LATENTS.safetensors [--data PATH] [--limit N]\n"
            "                   [--mode mean|sample] [--seed S] [--batch B] [--scaling-factor X]\n"
            "  encodes the autoencoder's data set (its config's dataset and data_path, or --data)\n"
            "  into tensor 'latents' F32 (N, h, w, latent_channels) and 'labels' I32 (N):\n"
            "  scaling_factor * the posterior's mean (default) or a sample of it.\n"
            "  scaling_factor = 1/std of the unscaled latents, measured over all N >= %d images\n"
            "  unless --scaling-factor gives it; it is written to the file's metadata and to\n"
            "  the autoencoder checkpoint's config (ddpm sample --vae divides by it).\n",
            MIN_SCALE_IMAGES);
}

static EncodeArgs parse_args(int argc, char **argv) {
    EncodeArgs a = {.batch = 64};
    static const struct option options[] = {
        {"vae", required_argument, 0, 'v'},   {"out", required_argument, 0, 'o'},
        {"data", required_argument, 0, 'd'},  {"limit", required_argument, 0, 'l'},
        {"mode", required_argument, 0, 'm'},  {"seed", required_argument, 0, 's'},
        {"batch", required_argument, 0, 'b'}, {"scaling-factor", required_argument, 0, 'f'},
        {"device", required_argument, 0, 'D'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'v': a.vae = optarg; break;
        case 'o': a.out = optarg; break;
        case 'd': a.data = optarg; break;
        case 'l': a.limit = (int)parse_long_flag("--limit", optarg, 1, 100000000); break;
        case 'm':
            if (strcmp(optarg, "mean") && strcmp(optarg, "sample"))
                die("--mode: expected mean or sample, got '%s'", optarg);
            a.sample = strcmp(optarg, "sample") == 0;
            break;
        case 's': a.seed = (unsigned long long)parse_long_flag("--seed", optarg, 0, 1L << 62); break;
        case 'b': a.batch = (int)parse_long_flag("--batch", optarg, 1, 65536); break;
        case 'f':
            a.scaling_factor = parse_double_flag("--scaling-factor", optarg);
            if (!(a.scaling_factor > 0) || !isfinite(a.scaling_factor))
                die("--scaling-factor: must be a positive number, got '%s'", optarg);
            break;
        case 'D': break;   /* handled by main */
        case 'h': usage(); exit(0);
        default: usage(); exit(2);
        }
    }
    if (optind < argc) die("unexpected argument '%s'", argv[optind]);
    if (!a.vae || !a.out) {
        usage();
        die("encode: --vae FILE and --out FILE are required");
    }
    return a;
}

/* 1/std over every element (about their mean), in double */
static double measure_scaling_factor(const float *z, size_t count) {
    double sum = 0, sq = 0;
    for (size_t i = 0; i < count; i++) sum += z[i];
    double mean = sum / (double)count;
    for (size_t i = 0; i < count; i++) sq += (z[i] - mean) * (z[i] - mean);
    return 1.0 / sqrt(sq / (double)(count - 1));
}

static void write_latents(const EncodeArgs *a, const FirstStage *fs, const Dataset *d,
                          const float *latents, double factor) {
    StWriter w;
    st_writer_init(&w);
    int64_t shape[4] = {d->count, fs->side, fs->side, fs->cfg.latent_channels};
    st_writer_add(&w, "latents", ST_F32, 4, shape, latents);
    if (d->labels) st_writer_add(&w, "labels", ST_I32, 1, (int64_t[]){d->count}, d->labels);
    char text[64];
    snprintf(text, sizeof text, "%.9g", factor);
    st_writer_meta(&w, "scaling_factor", text);
    st_writer_meta(&w, "vae", a->vae);
    st_writer_meta(&w, "mode", a->sample ? "sample" : "mean");
    char err[1024];
    if (st_write(&w, a->out, err, sizeof err) != 0) die("%s", err);
    st_writer_free(&w);
}

int encode_main(int argc, char **argv, const Backend *be) {
    EncodeArgs a = parse_args(argc, argv);
    char err[1024];
    FirstStage fs;
    if (first_stage_open(&fs, a.vae, be, a.batch, 0, err, sizeof err) != 0) die("%s", err);
    const char *path = a.data ? a.data : fs.cfg.data_path;
    Dataset d;
    if (dataset_load_configured(&d, &fs.cfg, path, 0, a.limit, err, sizeof err) != 0)
        die("%s", err);
    if (!d.images || d.height != fs.cfg.image_size || d.width != fs.cfg.image_size ||
        d.channels != fs.cfg.in_channels)
        die("%s: %s %dx%dx%d, the autoencoder %s encodes %dx%dx%d images", path,
            d.images ? "images are" : "float data is", d.height, d.width, d.channels, a.vae,
            fs.cfg.image_size, fs.cfg.image_size, fs.cfg.in_channels);
    if (!a.scaling_factor && d.count < MIN_SCALE_IMAGES)
        die("%s: %d images, fewer than the %d that measuring scaling_factor needs (give "
            "--scaling-factor, or more data)", path, d.count, MIN_SCALE_IMAGES);
    const size_t D = first_stage_image_size(&fs), L = first_stage_latent_size(&fs);
    /* the trainer's scaling (q_sample_images): u8 / 127.5 - 1 */
    float *images = xmalloc((size_t)d.count * D * sizeof(float));
    for (size_t i = 0; i < (size_t)d.count * D; i++) images[i] = (float)d.images[i] / 127.5f - 1.0f;
    float *latents = xmalloc((size_t)d.count * L * sizeof(float));
    double started = now_seconds();
    first_stage_encode(&fs, images, d.count, a.sample, a.seed, 0, 1.0f, latents);
    double factor = a.scaling_factor ? a.scaling_factor
                                     : measure_scaling_factor(latents, (size_t)d.count * L);
    for (size_t i = 0; i < (size_t)d.count * L; i++) latents[i] *= (float)factor;
    fprintf(stderr, "encoded %d images to %dx%dx%d latents (%s) in %.1f s; scaling_factor %.6g%s\n",
            d.count, fs.side, fs.side, fs.cfg.latent_channels, a.sample ? "samples" : "means",
            now_seconds() - started, factor, a.scaling_factor ? " (given)" : " (measured)");
    write_latents(&a, &fs, &d, latents, factor);
    fprintf(stderr, "wrote %s\n", a.out);
    if (first_stage_record_scaling_factor(a.vae, factor, err, sizeof err) != 0) die("%s", err);
    free(images);
    free(latents);
    dataset_free(&d);
    first_stage_free(&fs);
    return 0;
}
