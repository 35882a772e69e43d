/* `ddpm encode`: a data set through a KL autoencoder's encoder into a latent file that
 * `ddpm train dataset=latents` reads: tensor "latents" F32 (N, h, w, latent_channels),
 * scaled by scaling_factor, and "labels" I32 (N) when the data has them. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "image_io.h"
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

/* ---- ddpm reconstruct ---- */

/* A posterior unit is active when its mean varies over the data (Burda et al. 2016). */
#define ACTIVE_UNIT_VARIANCE 0.01

static void reconstruct_usage(void) {
    fprintf(stderr,
            "usage: ddpm reconstruct --vae FILE [--data PATH] [--limit N] [--out DIR] [--grid N]\n"
            "                        [--batch B]\n"
            "  images -> posterior mean -> decoder, with the autoencoder's EMA weights. Prints\n"
            "  the MSE and PSNR on [0, 1] pixels (over the whole image the model sees, padding\n"
            "  included) and the active latent units (Var over the data of the mean > %g);\n"
            "  writes DIR/reconstructions.png (the first N originals, each beside its\n"
            "  reconstruction) and DIR/reconstruction.json.\n",
            ACTIVE_UNIT_VARIANCE);
}

typedef struct {
    double mse, psnr;
    int active, units;
} ReconStats;

static ReconStats reconstruction_stats(const float *images, const float *recon,
                                       const float *means, int n, size_t D, size_t L) {
    ReconStats st = {.units = (int)L};
    double sq = 0;
    for (size_t i = 0; i < (size_t)n * D; i++) {
        double r = recon[i] < -1 ? -1 : recon[i] > 1 ? 1 : recon[i];
        double diff = (r - images[i]) / 2.0;   /* [-1, 1] -> [0, 1] scale */
        sq += diff * diff;
    }
    st.mse = sq / ((double)n * D);
    st.psnr = -10.0 * log10(st.mse);
    for (size_t u = 0; u < L; u++) {
        double sum = 0, sum2 = 0;
        for (int s = 0; s < n; s++) sum += means[(size_t)s * L + u];
        double mean = sum / n;
        for (int s = 0; s < n; s++) {
            double d = means[(size_t)s * L + u] - mean;
            sum2 += d * d;
        }
        st.active += sum2 / (n > 1 ? n - 1 : 1) > ACTIVE_UNIT_VARIANCE;
    }
    return st;
}

static void write_pairs_grid(const char *dir, const float *images, const float *recon, int n,
                             const Config *c) {
    const size_t D = (size_t)c->image_size * c->image_size * c->in_channels;
    float *pairs = xmalloc(2 * (size_t)n * D * sizeof(float));
    for (int i = 0; i < n; i++) {
        memcpy(pairs + (2 * (size_t)i) * D, images + (size_t)i * D, D * sizeof(float));
        memcpy(pairs + (2 * (size_t)i + 1) * D, recon + (size_t)i * D, D * sizeof(float));
    }
    uint8_t *u8 = xmalloc(2 * (size_t)n * D);
    images_to_u8(u8, pairs, 2 * (size_t)n * D);
    char path[1024], err[1024];
    snprintf(path, sizeof path, "%s/reconstructions.png", dir);
    if (write_png_grid(path, u8, 2 * n, c->image_size, c->image_size, c->in_channels, err,
                       sizeof err) != 0)
        die("%s", err);
    fprintf(stderr, "wrote %s\n", path);
    free(pairs);
    free(u8);
}

int reconstruct_main(int argc, char **argv, const Backend *be) {
    const char *vae_path = NULL, *data = NULL, *out = "reconstruction";
    int limit = 0, grid = 32, batch = 64;
    static const struct option options[] = {
        {"vae", required_argument, 0, 'v'},   {"data", required_argument, 0, 'd'},
        {"limit", required_argument, 0, 'l'}, {"out", required_argument, 0, 'o'},
        {"grid", required_argument, 0, 'g'},  {"batch", required_argument, 0, 'b'},
        {"device", required_argument, 0, 'D'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'v': vae_path = optarg; break;
        case 'd': data = optarg; break;
        case 'l': limit = (int)parse_long_flag("--limit", optarg, 1, 100000000); break;
        case 'o': out = optarg; break;
        case 'g': grid = (int)parse_long_flag("--grid", optarg, 0, 4096); break;
        case 'b': batch = (int)parse_long_flag("--batch", optarg, 1, 65536); break;
        case 'D': break;
        case 'h': reconstruct_usage(); exit(0);
        default: reconstruct_usage(); exit(2);
        }
    }
    if (optind < argc) die("unexpected argument '%s'", argv[optind]);
    if (!vae_path) {
        reconstruct_usage();
        die("reconstruct: --vae FILE is required");
    }
    char err[1024];
    if (check_writable_dir(out, 1, err, sizeof err) != 0) die("--out: %s", err);
    FirstStage enc, dec;
    if (first_stage_open(&enc, vae_path, be, batch, 0, err, sizeof err) != 0) die("%s", err);
    if (first_stage_open(&dec, vae_path, be, batch, 1, err, sizeof err) != 0) die("%s", err);
    const char *path = data ? data : enc.cfg.data_path;
    Dataset d;
    if (dataset_load_configured(&d, &enc.cfg, path, 0, limit, err, sizeof err) != 0)
        die("%s", err);
    if (!d.images || d.height != enc.cfg.image_size || d.channels != enc.cfg.in_channels)
        die("%s: not %dx%dx%d images, which %s encodes", path, enc.cfg.image_size,
            enc.cfg.image_size, enc.cfg.in_channels, vae_path);
    const size_t D = first_stage_image_size(&enc), L = first_stage_latent_size(&enc);
    float *images = xmalloc((size_t)d.count * D * sizeof(float));
    for (size_t i = 0; i < (size_t)d.count * D; i++) images[i] = (float)d.images[i] / 127.5f - 1.0f;
    float *means = xmalloc((size_t)d.count * L * sizeof(float));
    float *recon = xmalloc((size_t)d.count * D * sizeof(float));
    first_stage_encode(&enc, images, d.count, 0, 0, 0, 1.0f, means);
    first_stage_decode(&dec, means, d.count, 1.0f, recon);
    ReconStats st = reconstruction_stats(images, recon, means, d.count, D, L);
    printf("reconstruction of %d images from %s: MSE %.6f, PSNR %.2f dB; active latent units "
           "%d of %d\n", d.count, path, st.mse, st.psnr, st.active, st.units);
    if (grid > 0) write_pairs_grid(out, images, recon, grid < d.count ? grid : d.count, &enc.cfg);
    char json[1024], jpath[1024];
    int len = snprintf(json, sizeof json,
                       "{\"images\": %d, \"data\": \"%s\", \"mse\": %.8g, \"psnr_db\": %.6g, "
                       "\"active_units\": %d, \"latent_units\": %d}\n",
                       d.count, path, st.mse, st.psnr, st.active, st.units);
    snprintf(jpath, sizeof jpath, "%s/reconstruction.json", out);
    if (write_file_atomic(jpath, json, (size_t)len, err, sizeof err) != 0) die("%s", err);
    free(images), free(means), free(recon);
    dataset_free(&d);
    first_stage_free(&enc);
    first_stage_free(&dec);
    return 0;
}
