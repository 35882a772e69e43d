/* `ddpm sample` and `ddpm invert`: a checkpoint's EMA weights through a sampler plan. */
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "dist.h"
#include "image_io.h"
#include "latent.h"
#include "npy.h"
#include "sample.h"
#include "unet.h"
#include "util.h"

void inference_load(Inference *inf, const char *ckpt, const Backend *be, int batch) {
    char err[1024];
    config_defaults(&inf->cfg);
    if (checkpoint_read_config(ckpt, &inf->cfg, err, sizeof err) != 0) die("%s", err);
    if (config_validate(&inf->cfg, err, sizeof err) != 0) die("%s: %s", ckpt, err);
    const Config *c = &inf->cfg;
    if (diffusion_from_config(&inf->diffusion, c, err, sizeof err) != 0) die("%s: %s", ckpt, err);
    inf->model = unet_build(be, c, batch, 0);
    float *bufs[CKPT_BUFFERS] = {NULL, inf->model->weights, NULL, NULL};
    if (checkpoint_read(ckpt, inf->model, bufs, NULL, err, sizeof err) != 0) die("%s", err);
    ModelOutput output = {.prediction = inf->diffusion.pred, .learned_var = c->learn_sigma,
                          .channels = c->in_channels};
    net_denoiser_init(&inf->denoiser, inf->model, NULL, output);
}

void inference_free(Inference *inf) {
    net_denoiser_free(&inf->denoiser);
    net_free(inf->model);
    diffusion_free(&inf->diffusion);
}

typedef struct {
    const char *ckpt, *out_dir, *noise, *save_noise, *images, *out_file;
    const char *vae;   /* a latent model's autoencoder: decode the samples to images */
    int n, batch, clip, scale;
    unsigned long long seed;
    SamplerOptions sampler;
} SampleArgs;

static void usage(void) {
    fprintf(stderr,
            "usage: ddpm sample --ckpt FILE [--n N] [--out DIR] [--seed S] [--batch B] [--clip 0|1]\n"
            "                   [--sampler ancestral|ddim] [--steps SPEC] [--eta E]\n"
            "                   [--noise x_T.npy] [--save-noise x_T.npy] [--scale K] [--vae FILE]\n"
            "       ddpm invert --ckpt FILE --images x0.npy --out x_T.npy [--steps SPEC] [--batch B]\n"
            "  SPEC: every timestep (default), N (respaced), ddimN, or section counts like 10,10,20\n"
            "  sample writes DIR/samples.png and DIR/samples.npz (arr_0: uint8 N,H,W,C)\n"
            "  --scale K enlarges each image of samples.png K times (nearest neighbour)\n"
            "  --vae FILE: the model samples latents (dataset=latents); decode them with this\n"
            "  autoencoder checkpoint (x = decoder(z / scaling_factor)) into the grid and npz\n");
}

enum { MAX_GRID_SCALE = 16 };

static SampleArgs parse_args(int argc, char **argv) {
    SampleArgs a = {.out_dir = "samples", .n = 16, .clip = -1, .scale = 1,
                    .sampler = {.kind = SAMPLER_ANCESTRAL}};
    static const struct option options[] = {
        {"ckpt", required_argument, 0, 'c'},    {"n", required_argument, 0, 'n'},
        {"out", required_argument, 0, 'o'},     {"seed", required_argument, 0, 's'},
        {"batch", required_argument, 0, 'b'},   {"clip", required_argument, 0, 'l'},
        {"sampler", required_argument, 0, 'k'}, {"steps", required_argument, 0, 'p'},
        {"eta", required_argument, 0, 'e'},     {"noise", required_argument, 0, 'z'},
        {"save-noise", required_argument, 0, 'Z'}, {"images", required_argument, 0, 'i'},
        {"device", required_argument, 0, 'd'},  {"scale", required_argument, 0, 'x'},
        {"vae", required_argument, 0, 'V'},     {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'c': a.ckpt = optarg; break;
        case 'n': a.n = (int)parse_long_flag("--n", optarg, 1, 1000000); break;
        case 'o': a.out_dir = a.out_file = optarg; break;
        case 's': a.seed = (unsigned long long)parse_long_flag("--seed", optarg, 0, 1L << 62); break;
        case 'b': a.batch = (int)parse_long_flag("--batch", optarg, 1, 65536); break;
        case 'l': a.clip = (int)parse_long_flag("--clip", optarg, 0, 1); break;
        case 'k':
            if (sampler_kind_from_name(optarg, &a.sampler.kind) != 0)
                die("--sampler: unknown sampler '%s' (ancestral or ddim)", optarg);
            break;
        case 'p': a.sampler.spacing = optarg; break;
        case 'e': a.sampler.eta = parse_double_flag("--eta", optarg); break;
        case 'z': a.noise = optarg; break;
        case 'Z': a.save_noise = optarg; break;
        case 'i': a.images = optarg; break;
        case 'x': a.scale = (int)parse_long_flag("--scale", optarg, 1, MAX_GRID_SCALE); break;
        case 'V': a.vae = optarg; break;
        case 'd': break;   /* handled by main */
        case 'h': usage(); exit(0);
        default: usage(); exit(2);
        }
    }
    if (optind < argc) die("unexpected argument '%s'", argv[optind]);
    if (!a.ckpt) {
        usage();
        die("--ckpt is required");
    }
    return a;
}

/* Reads an (N, H, W, C) float32 array that must fit the model; sets *n. */
static float *read_images_npy(const char *path, const Config *c, int *n) {
    float *data;
    int64_t shape[8];
    int ndim;
    char err[1024];
    if (npy_read_f32(path, &data, shape, &ndim, err, sizeof err) != 0) die("%s", err);
    if (ndim != 4 || shape[1] != c->image_size || shape[2] != c->image_size ||
        shape[3] != c->in_channels || shape[0] < 1)
        die("%s: expected shape (N, %d, %d, %d) for this checkpoint", path, c->image_size,
            c->image_size, c->in_channels);
    *n = (int)shape[0];
    return data;
}

static void write_npy_images(const char *path, const float *x, int n, const Config *c) {
    char err[1024];
    int64_t shape[4] = {n, c->image_size, c->image_size, c->in_channels};
    if (npy_write_f32(path, x, shape, 4, err, sizeof err) != 0) die("%s", err);
    fprintf(stderr, "wrote %s\n", path);
}

/* The PNG grid, each image enlarged scale times; samples.npz keeps the model's size. */
static void write_grid(const char *path, const uint8_t *pixels, int n, const Config *cfg,
                       int scale) {
    int side = cfg->image_size, c = cfg->in_channels;
    uint8_t *scaled = scale > 1 ? images_upscale_nearest(pixels, n, side, side, c, scale) : NULL;
    char err[1024];
    if (write_png_grid(path, scaled ? scaled : pixels, n, side * scale, side * scale, c, err,
                       sizeof err) != 0)
        die("%s", err);
    free(scaled);
    fprintf(stderr, "wrote %s\n", path);
}

static void write_outputs(const char *out_dir, int n, const Config *cfg, const float *images,
                          int scale) {
    size_t D = (size_t)cfg->image_size * cfg->image_size * cfg->in_channels;
    uint8_t *pixels = xmalloc((size_t)n * D);
    images_to_u8(pixels, images, (size_t)n * D);
    char err[1024], path[1024];
    if (make_dirs(out_dir, err, sizeof err) != 0) die("%s", err);
    snprintf(path, sizeof path, "%s/samples.png", out_dir);
    write_grid(path, pixels, n, cfg, scale);
    snprintf(path, sizeof path, "%s/samples.npz", out_dir);
    if (write_npz_u8(path, pixels, n, cfg->image_size, cfg->image_size, cfg->in_channels, err,
                     sizeof err) != 0)
        die("%s", err);
    fprintf(stderr, "wrote %s\n", path);
    free(pixels);
}

static void make_plan(SamplerPlan *plan, Inference *inf, SampleArgs *a, int inversion) {
    char err[512];
    a->sampler.clip_denoised = a->clip >= 0 ? a->clip : inf->cfg.clip_denoised;
    const ModelOutput *model = &inf->denoiser.base.output;
    int rc = inversion
                 ? sampler_plan_inversion(plan, &inf->diffusion, &a->sampler, model, err, sizeof err)
                 : sampler_plan_init(plan, &inf->diffusion, &a->sampler, model, err, sizeof err);
    if (rc != 0) die("%s", err);
}

/* Under a launcher each rank samples its chunks (sample_images_share) and writes them,
 * in chunk order, to DIR/part-RANK.npy; rank 0 then puts every part in its place.
 * DIR must be on a filesystem all ranks see. */
static void part_path(char *path, size_t size, const char *out_dir, int rank) {
    snprintf(path, size, "%s/part-%05d.npy", out_dir, rank);
}

static int images_of_rank(int n, int batch, int rank, int world_size) {
    int count = 0;
    for (int first = 0, chunk = 0; first < n; first += batch, chunk++)
        if (chunk % world_size == rank) count += n - first < batch ? n - first : batch;
    return count;
}

/* Copies rank's chunks between the full array and its packed part (to_part: which way). */
static void move_chunks(float *full, float *part, int n, int batch, size_t D, int rank,
                        int world_size, int to_part) {
    size_t at = 0;
    for (int first = 0, chunk = 0; first < n; first += batch, chunk++) {
        if (chunk % world_size != rank) continue;
        size_t bytes = (size_t)(n - first < batch ? n - first : batch) * D * sizeof(float);
        float *slot = full + (size_t)first * D;
        memcpy(to_part ? part + at : slot, to_part ? slot : part + at, bytes);
        at += bytes / sizeof(float);
    }
}

static void gather_parts(Dist *dist, const SampleArgs *a, const Config *c, float *images,
                         int batch, size_t D) {
    const int rank = dist->env.rank, W = dist->env.world_size;
    char path[1024], err[1024];
    if (make_dirs(a->out_dir, err, sizeof err) != 0) die("%s", err);
    if (rank != 0) {
        int count = images_of_rank(a->n, batch, rank, W);
        float *part = xmalloc((size_t)count * D * sizeof(float) + 1);
        move_chunks(images, part, a->n, batch, D, rank, W, 1);
        part_path(path, sizeof path, a->out_dir, rank);
        write_npy_images(path, part, count, c);
        free(part);
    }
    dist_barrier(dist);
    for (int r = 1; r < W && rank == 0; r++) {
        int count;
        part_path(path, sizeof path, a->out_dir, r);
        float *part = read_images_npy(path, c, &count);
        if (count != images_of_rank(a->n, batch, r, W))
            die("%s: %d images, expected %d from rank %d", path, count,
                images_of_rank(a->n, batch, r, W), r);
        move_chunks(images, part, a->n, batch, D, r, W, 0);
        free(part);
        remove(path);
    }
}

/* --vae: before any sampling, the autoencoder must be one whose latent the model samples. */
static void open_decoder(FirstStage *vae, const SampleArgs *a, const Config *model,
                         const Backend *be, int batch) {
    char err[1024];
    if (model->dataset != DATASET_LATENTS)
        die("--vae: %s is a pixel model (dataset '%s'), not a latent one (dataset=latents)",
            a->ckpt, config_enum_name("dataset", model->dataset));
    if (first_stage_open(vae, a->vae, be, batch, 1, err, sizeof err) != 0) die("--vae: %s", err);
    if (a->clip < 0 ? model->clip_denoised : a->clip)
        fprintf(stderr, "warning: %s clamps x0 to [-1, 1] while sampling (clip_denoised), which "
                "scaled latents exceed; --clip 0 turns it off\n", a->ckpt);
    if (vae->side != model->image_size || vae->cfg.latent_channels != model->in_channels)
        die("--vae: %s has %dx%dx%d latents, but %s samples %dx%dx%d", a->vae, vae->side,
            vae->side, vae->cfg.latent_channels, a->ckpt, model->image_size, model->image_size,
            model->in_channels);
}

static void decode_and_write(FirstStage *vae, const SampleArgs *a, const float *latents) {
    float *images = xmalloc((size_t)a->n * first_stage_image_size(vae) * sizeof(float));
    first_stage_decode(vae, latents, a->n, (float)vae->cfg.scaling_factor, images);
    fprintf(stderr, "decoded %d latents with %s (scaling_factor %g)\n", a->n, a->vae,
            vae->cfg.scaling_factor);
    write_outputs(a->out_dir, a->n, &vae->cfg, images, a->scale);
    free(images);
}

int sample_main(int argc, char **argv, const Backend *be) {
    SampleArgs a = parse_args(argc, argv);
    Inference inf;
    Config peek;
    char err[1024];
    float *x_T = NULL;
    config_defaults(&peek);
    if (checkpoint_read_config(a.ckpt, &peek, err, sizeof err) != 0) die("%s", err);
    /* Before the work, not after it: an unwritable --out would waste the whole run. */
    if (check_writable_dir(a.out_dir, 1, err, sizeof err) != 0) die("--out: %s", err);
    if (a.noise) x_T = read_images_npy(a.noise, &peek, &a.n);
    int batch = a.batch ? a.batch : (a.n < 64 ? a.n : 64);
    FirstStage vae = {0};
    if (a.vae) open_decoder(&vae, &a, &peek, be, batch);
    Dist *dist = dist_start(be, peek.dist_timeout);
    const int rank = dist->env.rank, W = dist->env.world_size;
    inference_load(&inf, a.ckpt, be, batch);
    SamplerPlan plan;
    make_plan(&plan, &inf, &a, 0);
    Denoiser *den = &inf.denoiser.base;
    size_t D = den->sample_size;
    if (!x_T && a.save_noise) {
        x_T = xmalloc((size_t)a.n * D * sizeof(float));
        sample_initial_noise(den, a.n, a.seed, x_T);
    }
    if (a.save_noise && rank == 0) write_npy_images(a.save_noise, x_T, a.n, &inf.cfg);
    if (rank == 0)
        fprintf(stderr, "sampling %d images: %s, %d steps, batch %d, seed %llu, backend %s%s\n",
                a.n, a.sampler.kind == SAMPLER_DDIM ? "ddim" : "ancestral", plan.count, batch, a.seed, be->name,
                W > 1 ? ", chunks shared over the ranks" : "");
    float *images = xmalloc((size_t)a.n * D * sizeof(float));
    double started = now_seconds();
    sample_images_share(den, &plan, a.n, a.seed, x_T, images, rank == 0, rank, W);
    if (W > 1) gather_parts(dist, &a, &inf.cfg, images, batch, D);
    if (rank == 0) {
        fprintf(stderr, "sampled in %.1f s\n", now_seconds() - started);
        if (a.vae) decode_and_write(&vae, &a, images);
        else write_outputs(a.out_dir, a.n, &inf.cfg, images, a.scale);
    }
    first_stage_free(&vae);
    free(images);
    dist_finalize(dist);
    free(x_T);
    sampler_plan_free(&plan);
    inference_free(&inf);
    return 0;
}

int invert_main(int argc, char **argv, const Backend *be) {
    SampleArgs a = parse_args(argc, argv);
    if (!a.images || !a.out_file) die("invert: --images x0.npy and --out x_T.npy are required");
    Config peek;
    char err[1024];
    config_defaults(&peek);
    if (checkpoint_read_config(a.ckpt, &peek, err, sizeof err) != 0) die("%s", err);
    char *out_copy = xstrdup(a.out_file);
    if (check_writable_dir(dirname(out_copy), 0, err, sizeof err) != 0) die("--out: %s", err);
    free(out_copy);
    int n;
    float *x0 = read_images_npy(a.images, &peek, &n);
    int batch = a.batch ? a.batch : (n < 64 ? n : 64);
    Inference inf;
    inference_load(&inf, a.ckpt, be, batch);
    a.clip = 0;
    SamplerPlan plan;
    make_plan(&plan, &inf, &a, 1);
    float *x_T = xmalloc((size_t)n * inf.denoiser.base.sample_size * sizeof(float));
    sample_images(&inf.denoiser.base, &plan, n, 0, x0, x_T, 1);
    write_npy_images(a.out_file, x_T, n, &inf.cfg);
    free(x0);
    free(x_T);
    sampler_plan_free(&plan);
    inference_free(&inf);
    return 0;
}
