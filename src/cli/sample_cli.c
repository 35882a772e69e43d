/* `ddpm sample` and `ddpm invert`: a checkpoint's EMA weights through a sampler plan. */
#include <getopt.h>
#include <math.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "classifier.h"
#include "classifier_guidance.h"
#include "dist.h"
#include "guidance.h"
#include "flow.h"
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
    if (c->mixed_precision == MIXED_PRECISION_BF16) net_use_bf16(inf->model);   /* as trained */
    PredictionType pred = c->objective == OBJECTIVE_FLOW ? PRED_VELOCITY : inf->diffusion.pred;
    ModelOutput output = {.prediction = pred, .learned_var = c->learn_sigma,
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
    const char *classes;        /* --class: "C", "C1,C2,..." or "all" */
    double guidance_scale;      /* --guidance-scale; NAN when not given */
    const char *classifier;     /* --classifier: a noisy classifier checkpoint (guidance) */
    double classifier_scale;    /* --classifier-scale; NAN when not given */
    const char *vae;   /* a latent model's autoencoder: decode the samples to images */
    int n, batch, clip, scale;
    int convert;     /* run a DDPM model under a flow sampler, or the reverse */
    unsigned long long seed;
    SamplerOptions sampler;
} SampleArgs;

static void usage(void) {
    fprintf(stderr,
            "usage: ddpm sample --ckpt FILE [--n N] [--out DIR] [--seed S] [--batch B] [--clip 0|1]\n"
            "                   [--sampler ancestral|ddim|euler|heun] [--steps SPEC] [--eta E]\n"
            "                   [--shift S] [--convert]\n"
            "                   [--noise x_T.npy] [--save-noise x_T.npy] [--scale K] [--vae FILE]\n"
            "                   [--class C|C1,C2,...|all] [--guidance-scale S]\n"
            "                   [--classifier CKPT [--classifier-scale S]]\n"
            "       ddpm invert --ckpt FILE --images x0.npy --out x_T.npy [--steps SPEC] [--batch B]\n"
            "  SPEC: every timestep (default), N (respaced), ddimN, or section counts like 10,10,20\n"
            "  euler, heun: flow samplers for objective=flow checkpoints; --steps N (default 50)\n"
            "    over diffusers' sigma grid with --shift S (> 0, default 1); heun's last step is\n"
            "    euler, so it makes 2N-1 model evaluations\n"
            "  --convert: sample a DDPM checkpoint with euler|heun, or a flow checkpoint with\n"
            "    ancestral|ddim, through the conversion between eps/x0/v and the velocity\n"
            "  sample writes DIR/samples.png and DIR/samples.npz (arr_0: uint8 N,H,W,C)\n"
            "  --scale K enlarges each image of samples.png K times (nearest neighbour)\n"
            "  class-conditional checkpoints (num_class_embeds > 0) need --class: one class for\n"
            "  every image, a list cycled over the images, or all: N/classes images of each class,\n"
            "  one row per class in samples.png; samples.npz then holds arr_1 (int64 labels)\n"
            "  --guidance-scale S: classifier-free guidance eps_u + S (eps_c - eps_u) (default 1:\n"
            "  the conditional model alone; 0: unconditional); S != 1 needs a model trained with\n"
            "  class_dropout > 0, and runs both halves as one batch of 2B\n"
            "  --classifier CKPT: classifier guidance (objective=classifier checkpoint, trained on\n"
            "  x_t) at --classifier-scale S (default 1): ancestral sampling shifts each step's mean\n"
            "  by S Sigma grad log p(y|x_t), DDIM shifts eps by -S sqrt(1-abar) grad log p(y|x_t);\n"
            "  --class then names the classes, also for an unconditional model\n"
            "  --vae FILE: the model samples latents (dataset=latents); decode them with this\n"
            "  autoencoder checkpoint (x = decoder(z / scaling_factor)) into the grid and npz\n");
}

enum { MAX_GRID_SCALE = 16 };

static const char *const sampler_names[] = {"ancestral", "ddim", "euler", "heun"};

static SampleArgs parse_args(int argc, char **argv) {
    SampleArgs a = {.out_dir = "samples", .n = 16, .clip = -1, .scale = 1, .guidance_scale = NAN,
                    .classifier_scale = NAN,
                    .sampler = {.kind = SAMPLER_ANCESTRAL}};
    static const struct option options[] = {
        {"ckpt", required_argument, 0, 'c'},    {"n", required_argument, 0, 'n'},
        {"out", required_argument, 0, 'o'},     {"seed", required_argument, 0, 's'},
        {"batch", required_argument, 0, 'b'},   {"clip", required_argument, 0, 'l'},
        {"sampler", required_argument, 0, 'k'}, {"steps", required_argument, 0, 'p'},
        {"eta", required_argument, 0, 'e'},     {"noise", required_argument, 0, 'z'},
        {"save-noise", required_argument, 0, 'Z'}, {"images", required_argument, 0, 'i'},
        {"device", required_argument, 0, 'd'},  {"scale", required_argument, 0, 'x'},
        {"class", required_argument, 0, 'C'}, {"guidance-scale", required_argument, 0, 'g'},
        {"classifier", required_argument, 0, 'K'},
        {"classifier-scale", required_argument, 0, 'G'},
        {"shift", required_argument, 0, 'S'},   {"convert", no_argument, 0, 'V'},
        {"vae", required_argument, 0, 'A'},     {"help", no_argument, 0, 'h'},
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
                die("--sampler: unknown sampler '%s' (ancestral, ddim, euler or heun)", optarg);
            break;
        case 'p': a.sampler.spacing = optarg; break;
        case 'e': a.sampler.eta = parse_double_flag("--eta", optarg); break;
        case 'z': a.noise = optarg; break;
        case 'Z': a.save_noise = optarg; break;
        case 'i': a.images = optarg; break;
        case 'S':
            a.sampler.shift = parse_double_flag("--shift", optarg);
            if (!(a.sampler.shift > 0) || !isfinite(a.sampler.shift))
                die("--shift %s: the shift must be a number > 0", optarg);
            break;
        case 'V': a.convert = 1; break;
        case 'x': a.scale = (int)parse_long_flag("--scale", optarg, 1, MAX_GRID_SCALE); break;
        case 'C': a.classes = optarg; break;
        case 'g':
            a.guidance_scale = parse_double_flag("--guidance-scale", optarg);
            if (!isfinite(a.guidance_scale) || fabs(a.guidance_scale) > 1e4)
                die("--guidance-scale: %s is not a finite scale in [-1e4, 1e4]", optarg);
            break;
        case 'K': a.classifier = optarg; break;
        case 'G':
            a.classifier_scale = parse_double_flag("--classifier-scale", optarg);
            if (!isfinite(a.classifier_scale) || fabs(a.classifier_scale) > 1e4)
                die("--classifier-scale: %s is not a finite scale in [-1e4, 1e4]", optarg);
            break;
        case 'A': a.vae = optarg; break;
        case 'd': break;   /* handled by main */
        case 'h': usage(); exit(0);
        default: usage(); exit(2);
        }
    }
    if (optind < argc) die("unexpected argument '%s'", argv[optind]);
    int flow_sampler = a.sampler.kind == SAMPLER_EULER || a.sampler.kind == SAMPLER_HEUN;
    if (a.sampler.shift != 0 && !flow_sampler)
        die("--shift applies to the flow samplers (--sampler euler or heun)");
    if (!a.ckpt) {
        usage();
        die("--ckpt is required");
    }
    if (!isnan(a.classifier_scale) && !a.classifier)
        die("--classifier-scale needs --classifier CKPT (a noisy classifier)");
    return a;
}

/* --class as n labels for the checkpoint's config: one class, a list cycled over the
 * images, or "all" (n/classes images per class, in order: *grid_cols = n/classes puts one
 * class per row of samples.png). NULL for an unconditional checkpoint. */
static int32_t *sample_labels(const SampleArgs *a, const Config *c, int classifier_classes,
                              int n, int *grid_cols) {
    /* classifier guidance names the classifier's classes, also for an unconditional model */
    const int classes = c->num_class_embeds ? config_num_classes(c) : classifier_classes;
    if (c->num_class_embeds == 0 && !isnan(a->guidance_scale))
        die("--guidance-scale: %s is an unconditional model (num_class_embeds = 0)", a->ckpt);
    if (c->num_class_embeds == 0 && classifier_classes == 0) {
        if (a->classes)
            die("--class: %s is an unconditional model (num_class_embeds = 0)", a->ckpt);
        if (!isnan(a->guidance_scale))
            die("--guidance-scale: %s is an unconditional model (num_class_embeds = 0)", a->ckpt);
        return NULL;
    }
    if (!a->classes)
        die("--class is required: %s is %s (%d classes); give a class, a list C1,C2,... or all",
            c->num_class_embeds ? a->ckpt : a->classifier,
            c->num_class_embeds ? "class-conditional" : "a classifier", classes);
    int32_t *labels = xmalloc((size_t)n * sizeof(int32_t));
    if (strcmp(a->classes, "all") == 0) {
        if (n % classes != 0)
            die("--class all: --n %d is not a multiple of the %d classes", n, classes);
        for (int i = 0; i < n; i++) labels[i] = i / (n / classes);
        *grid_cols = n / classes;
        return labels;
    }
    int count = 0;
    for (const char *p = a->classes;; count++) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (*end != ',' && *end != 0) || v < 0 || v >= classes)
            die("--class: '%s' is not a class of %s or a list of them (0 to %d, or all)",
                a->classes, c->num_class_embeds ? a->ckpt : a->classifier, classes - 1);
        if (count < n) labels[count] = (int32_t)v;
        if (*end == 0) break;
        p = end + 1;
    }
    count++;
    for (int i = count; i < n; i++) labels[i] = labels[i % count];
    return labels;
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
                       int grid_cols, int scale) {
    int side = cfg->image_size, c = cfg->in_channels;
    uint8_t *scaled = scale > 1 ? images_upscale_nearest(pixels, n, side, side, c, scale) : NULL;
    char err[1024];
    if (write_png_grid_cols(path, scaled ? scaled : pixels, n, side * scale, side * scale, c,
                            grid_cols, err, sizeof err) != 0)
        die("%s", err);
    free(scaled);
    fprintf(stderr, "wrote %s\n", path);
}

static void write_outputs(const char *out_dir, int n, const Config *cfg, const float *images,
                          const int32_t *labels, int grid_cols, int scale) {
    size_t D = (size_t)cfg->image_size * cfg->image_size * cfg->in_channels;
    uint8_t *pixels = xmalloc((size_t)n * D);
    images_to_u8(pixels, images, (size_t)n * D);
    char err[1024], path[1024];
    if (make_dirs(out_dir, err, sizeof err) != 0) die("%s", err);
    snprintf(path, sizeof path, "%s/samples.png", out_dir);
    write_grid(path, pixels, n, cfg, grid_cols, scale);
    snprintf(path, sizeof path, "%s/samples.npz", out_dir);
    if (write_npz_u8_labels(path, pixels, n, cfg->image_size, cfg->image_size, cfg->in_channels,
                            labels, err, sizeof err) != 0)
        die("%s", err);
    fprintf(stderr, "wrote %s\n", path);
    free(pixels);
}

/* The denoiser the sampler runs: the model itself, or (--convert) the model wrapped in the
 * conversion to the sampler's parameterisation. Dies when the two do not match. */
typedef struct {
    VelocityFromDdpm as_velocity;
    EpsFromVelocity as_eps;
    Denoiser *den;
} SamplerModel;

static Denoiser *sampler_model(SamplerModel *m, Denoiser *model, Inference *inf,
                               const SampleArgs *a, const char *ckpt) {
    int flow_sampler = a->sampler.kind == SAMPLER_EULER || a->sampler.kind == SAMPLER_HEUN;
    int flow_model = inf->cfg.objective == OBJECTIVE_FLOW;
    const char *sampler = a->sampler.kind == SAMPLER_EULER ? "euler"
                          : a->sampler.kind == SAMPLER_HEUN ? "heun"
                          : a->sampler.kind == SAMPLER_DDIM ? "ddim" : "ancestral";
    memset(m, 0, sizeof *m);
    m->den = model;
    if (flow_sampler == flow_model) return m->den;
    if (!a->convert)
        die("%s: --sampler %s needs %s, and this checkpoint is objective=%s: add --convert to "
            "sample it through the conversion between eps/x0/v and the velocity", ckpt, sampler,
            flow_sampler ? "a flow model (objective=flow)" : "a DDPM model (objective=ddpm)",
            config_enum_name("objective", inf->cfg.objective));
    if (flow_sampler) {
        velocity_from_ddpm_init(&m->as_velocity, m->den, &inf->diffusion);
        m->den = &m->as_velocity.base;
    } else {
        eps_from_velocity_init(&m->as_eps, m->den, &inf->diffusion);
        m->den = &m->as_eps.base;
    }
    return m->den;
}

static void sampler_model_free(SamplerModel *m) {
    if (m->as_velocity.buf) velocity_from_ddpm_free(&m->as_velocity);
    if (m->as_eps.buf) eps_from_velocity_free(&m->as_eps);
}

static void make_plan(SamplerPlan *plan, Inference *inf, SampleArgs *a, Denoiser *den,
                      int inversion) {
    char err[512];
    a->sampler.clip_denoised = a->clip >= 0 ? a->clip : inf->cfg.clip_denoised;
    const ModelOutput *model = &den->output;
    if (!inversion && (a->sampler.kind == SAMPLER_EULER || a->sampler.kind == SAMPLER_HEUN)) {
        if (flow_plan_from_options(plan, &a->sampler, inf->cfg.timesteps, den, err, sizeof err))
            die("%s", err);
        return;
    }
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

/* The classifier's config, checked against the model before any work: the same images
 * (size, channels) and the same timesteps, so that it reads x_t at the model's t. */
static void read_classifier_config(const SampleArgs *a, const Config *model, Config *c) {
    char err[1024];
    config_defaults(c);
    if (checkpoint_read_config(a->classifier, c, err, sizeof err) != 0) die("%s", err);
    if (c->objective != OBJECTIVE_CLASSIFIER)
        die("--classifier %s: a %s checkpoint, not a classifier (objective=classifier)",
            a->classifier, config_enum_name("objective", c->objective));
    if (c->image_size != model->image_size || c->in_channels != model->in_channels)
        die("--classifier %s: it reads %dx%dx%d images, the model %s makes %dx%dx%d",
            a->classifier, c->image_size, c->image_size, c->in_channels, a->ckpt,
            model->image_size, model->image_size, model->in_channels);
    if (c->timesteps != model->timesteps)
        die("--classifier %s: trained on %d timesteps, the model %s has %d", a->classifier,
            c->timesteps, a->ckpt, model->timesteps);
    if (model->num_class_embeds && config_num_classes(model) != c->num_classes)
        die("--classifier %s: %d classes, the model %s has %d", a->classifier, c->num_classes,
            a->ckpt, config_num_classes(model));
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

static void decode_and_write(FirstStage *vae, const SampleArgs *a, const float *latents,
                             const int32_t *labels, int grid_cols) {
    float *images = xmalloc((size_t)a->n * first_stage_image_size(vae) * sizeof(float));
    first_stage_decode(vae, latents, a->n, (float)vae->cfg.scaling_factor, images);
    fprintf(stderr, "decoded %d latents with %s (scaling_factor %g)\n", a->n, a->vae,
            vae->cfg.scaling_factor);
    write_outputs(a->out_dir, a->n, &vae->cfg, images, labels, grid_cols, a->scale);
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
    int grid_cols = 0;
    Config classifier_cfg;
    if (a.classifier) read_classifier_config(&a, &peek, &classifier_cfg);
    int32_t *labels = sample_labels(&a, &peek, a.classifier ? classifier_cfg.num_classes : 0,
                                    a.n, &grid_cols);
    float guidance = isnan(a.guidance_scale) ? 1.0f : (float)a.guidance_scale;
    if (labels && guidance != 1.0f && config_null_class(&peek) < 0)
        die("--guidance-scale %g: %s was trained without label dropout (class_dropout = 0), so "
            "it has no null class; only scale 1 (conditional) samples it", guidance, a.ckpt);
    int batch = a.batch ? a.batch : (a.n < 64 ? a.n : 64);
    /* both halves of a guided step run as one batch: the network is planned for 2x */
    const int conditional = peek.num_class_embeds > 0;
    int doubled = conditional && guidance != 0.0f && guidance != 1.0f;
    FirstStage vae = {0};
    if (a.vae) open_decoder(&vae, &a, &peek, be, batch);
    Dist *dist = dist_start(be, peek.dist_timeout);
    const int rank = dist->env.rank, W = dist->env.world_size;
    inference_load(&inf, a.ckpt, be, doubled ? 2 * batch : batch);
    Denoiser *den = &inf.denoiser.base;
    GuidedDenoiser guided = {0};
    if (conditional) {
        if (guided_denoiser_init(&guided, den, guidance, config_null_class(&inf.cfg), err,
                                 sizeof err) != 0)
            die("--guidance-scale: %s", err);
        den = &guided.base;
    }
    Denoiser *model_den = den;
    SamplerModel sampler_den;
    den = sampler_model(&sampler_den, den, &inf, &a, a.ckpt);
    const int converted = den != model_den;
    SamplerPlan plan;
    make_plan(&plan, &inf, &a, den, 0);
    ClassifierGuidance classifier_guided = {0};
    NetClassGradient class_gradient = {0};
    Net *classifier = NULL;
    if (a.classifier) {
        if (plan.sigmas)
            die("--classifier: classifier guidance runs with the ancestral and ddim samplers, "
                "not --sampler %s", sampler_names[a.sampler.kind]);
        classifier = classifier_load(a.classifier, be, batch, 1, &classifier_cfg, NULL);
        net_class_gradient_init(&class_gradient, classifier);
        float scale = isnan(a.classifier_scale) ? 1.0f : (float)a.classifier_scale;
        if (classifier_guidance_init(&classifier_guided, den, &class_gradient.base, &plan,
                                     a.sampler.kind, inf.diffusion.num_timesteps, scale, err,
                                     sizeof err) != 0)
            die("--classifier %s: %s", a.classifier, err);
        den = &classifier_guided.base;
    }
    size_t D = den->sample_size;
    if (!x_T && a.save_noise) {
        x_T = xmalloc((size_t)a.n * D * sizeof(float));
        sample_initial_noise(den, a.n, a.seed, x_T);
    }
    if (a.save_noise && rank == 0) write_npy_images(a.save_noise, x_T, a.n, &inf.cfg);
    if (rank == 0)
        fprintf(stderr, "sampling %d images: %s%s, %d steps (%d model evaluations), batch %d, "
                "seed %llu, backend %s%s%s\n", a.n, sampler_names[a.sampler.kind],
                converted ? " (converted)" : "", plan.count,
                plan.sigmas ? flow_plan_evaluations(&plan) : plan.count, batch, a.seed, be->name,
                W > 1 ? ", chunks shared over the ranks" : "",
                conditional ? (doubled ? ", classifier-free guidance (batch doubled)"
                                       : ", class-conditional") : "");
    if (rank == 0 && a.classifier)
        fprintf(stderr, "classifier guidance: %s at scale %g\n", a.classifier,
                isnan(a.classifier_scale) ? 1.0 : a.classifier_scale);
    float *images = xmalloc((size_t)a.n * D * sizeof(float));
    double started = now_seconds();
    sample_images_share(den, &plan, a.n, a.seed, x_T, labels, images, rank == 0, rank, W);
    double sampled = now_seconds() - started;
    if (W > 1) gather_parts(dist, &a, &inf.cfg, images, batch, D);
    if (rank == 0) {
        int evaluations = plan.sigmas ? flow_plan_evaluations(&plan) : plan.count;
        int batches = (a.n + batch - 1) / batch;
        fprintf(stderr, "sampled in %.1f s: %.1f ms per model evaluation of a batch of %d\n",
                sampled, 1e3 * sampled / ((double)evaluations * batches), batch);
        if (a.vae) decode_and_write(&vae, &a, images, labels, grid_cols);
        else write_outputs(a.out_dir, a.n, &inf.cfg, images, labels, grid_cols, a.scale);
    }
    first_stage_free(&vae);
    free(images);
    free(labels);
    if (conditional) guided_denoiser_free(&guided);
    if (classifier) {
        classifier_guidance_free(&classifier_guided);
        net_class_gradient_free(&class_gradient);
        net_free(classifier);
    }
    dist_finalize(dist);
    free(x_T);
    sampler_plan_free(&plan);
    sampler_model_free(&sampler_den);
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
    if (!isnan(a.guidance_scale)) die("--guidance-scale: invert runs the conditional model only");
    if (a.classifier) die("--classifier: invert runs the model only, without guidance");
    int grid_cols = 0;
    int32_t *labels = sample_labels(&a, &peek, 0, n, &grid_cols);
    int batch = a.batch ? a.batch : (n < 64 ? n : 64);
    Inference inf;
    inference_load(&inf, a.ckpt, be, batch);
    a.clip = 0;
    SamplerPlan plan;
    make_plan(&plan, &inf, &a, &inf.denoiser.base, 1);
    float *x_T = xmalloc((size_t)n * inf.denoiser.base.sample_size * sizeof(float));
    sample_images(&inf.denoiser.base, &plan, n, 0, x0, labels, x_T, 1);
    free(labels);
    write_npy_images(a.out_file, x_T, n, &inf.cfg);
    free(x0);
    free(x_T);
    sampler_plan_free(&plan);
    inference_free(&inf);
    return 0;
}
