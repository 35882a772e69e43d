/* Run configuration: one struct, one table of keys (src/config.c) that drives
 * parsing JSON config files, `key=value` overrides, validation and saving. */
#ifndef DDPM_CONFIG_H
#define DDPM_CONFIG_H

#include <stddef.h>

#define CONFIG_MAX_LEVELS 8

/* The enum keys, in the order of their names in src/io/config.c's table. Prediction and
 * variance use PredictionType (backend.h) and VarianceType (diffusion.h). */
typedef enum { LOSS_MSE = 0, LOSS_HYBRID = 1, LOSS_KL = 2 } LossKind;
typedef enum { SAVE_ERROR_STOP = 0, SAVE_ERROR_CONTINUE = 1 } SaveErrorPolicy;
/* mixed_precision (diffusers' name): no = fp32 throughout; bf16 = the network computes on
 * bf16 values (graph.h's emulation), master weights and optimizer state stay fp32 */
typedef enum { MIXED_PRECISION_NO = 0, MIXED_PRECISION_BF16 = 1 } MixedPrecision;
/* pad_io_channels: the U-Net's first and last convs computed on 8 channels (zero padding)
 * for tensor cores; auto = on for the CUDA backend with bf16 */
typedef enum { PAD_IO_AUTO = 0, PAD_IO_NO = 1, PAD_IO_YES = 2 } PadIoChannels;
typedef enum {
    TIMESTEPS_UNIFORM = 0, TIMESTEPS_LOSS_SECOND_MOMENT = 1,
    TIMESTEPS_LOGIT_NORMAL = 2      /* flow: t = sigmoid(logit_mean + logit_std z) (SD3) */
} TimestepSamplerKind;
typedef enum {
    DATASET_FASHION_MNIST = 0, DATASET_MNIST = 1, DATASET_CIFAR10 = 2,
    DATASET_LATENTS = 3,        /* float data: data_path is a safetensors file (data.h) */
    DATASET_FOLDER = 4          /* PNG/JPEG files, classes by subfolder (data.h) */
} DatasetKind;
/* What a run trains: the objective, and with it the network (src/train/models.c). */
typedef enum {
    OBJECTIVE_DDPM = 0,         /* the U-Net on the diffusion process (objective_ddpm.c) */
    OBJECTIVE_FLOW = 1,         /* the U-Net on a flow-matching path */
    OBJECTIVE_CLASSIFIER = 2,   /* a noisy classifier on x_t (classifier guidance) */
    OBJECTIVE_VAE = 3           /* a KL autoencoder (latent diffusion's first stage) */
} ObjectiveKind;
/* The autoencoder's reconstruction term. */
typedef enum { RECON_L1 = 0, RECON_L2 = 1 } ReconLossKind;
#define CONFIG_STR 256

typedef struct {
    int objective;                            /* ObjectiveKind: ddpm | flow | classifier | vae */
    /* model: the DDPM U-Net (diffusers UNet2DModel layout) */
    int image_size, in_channels, out_channels;
    int ch;                                   /* base channels; block i has ch*ch_mult[i] */
    int ch_mult[CONFIG_MAX_LEVELS], n_ch_mult;
    int num_res_blocks;
    int attn_resolutions[CONFIG_MAX_LEVELS], n_attn_resolutions;
    int groups;
    double dropout;
    int num_classes;                          /* objective=classifier: the head's outputs */
    int classifier_t_max;                     /* objective=classifier: t drawn uniformly in
                                                 [0, classifier_t_max); 0: all timesteps,
                                                 1: a clean classifier (t = 0) */
    int num_class_embeds;                     /* rows of class_embedding.weight (diffusers'
                                                 num_class_embeds); 0: unconditional */
    double class_dropout;                     /* classifier-free guidance: the probability a
                                                 training label becomes the null class, the
                                                 last row; 0: no null class */
    /* diffusion */
    int timesteps;
    char beta_schedule[CONFIG_STR];           /* linear | cosine | quadratic | sigmoid */
    int prediction;                           /* PredictionType (backend.h): eps | x0 | v */
    int variance;                             /* VarianceType (diffusion.h): fixedsmall |
                                                 fixedlarge (when not learned) */
    int learn_sigma;                          /* the model also outputs v: out_channels = 2 x in */
    int loss;                                 /* LossKind: mse | hybrid (mse + T/1000 L_vlb) |
                                                 kl (T L_t) */
    int timestep_sampler;                     /* TimestepSamplerKind: uniform | loss_second_moment
                                                 (ddpm) | logit_normal (flow) */
    /* flow matching (objective=flow, flow.h) */
    double logit_mean, logit_std;             /* logit_normal time sampling (SD3: 0, 1) */
    double flow_shift;                        /* sigma grid shift of the training-time grids */
    int flow_steps;                           /* Euler steps of the training-time grids */
    int clip_denoised;                        /* clamp predicted x0 to [-1, 1] when sampling */
    /* data */
    int dataset;                              /* DatasetKind: fashion_mnist | mnist | cifar10 |
                                                 latents | folder */
    char data_path[CONFIG_STR];               /* IDX images file, CIFAR-10 batches directory, a
                                                 latents safetensors file, or a folder of
                                                 PNG/JPEG files (class subfolders) */
    int data_limit;                           /* 0: all images */
    int skip_bad_images;                      /* folder: skip (and count) files that do not
                                                 decode, instead of stopping */
    int hflip;
    /* optimisation */
    int batch_size, steps;
    double lr;
    int warmup;
    double beta1, beta2, adam_eps, weight_decay, grad_clip, ema_decay;
    int max_bad_steps;                        /* consecutive non-finite steps before stopping */
    unsigned long long seed;
    /* output */
    char out_dir[CONFIG_STR];
    int log_every, sample_every, sample_n, ckpt_every, keep_ckpts;
    int on_save_error;                        /* SaveErrorPolicy: stop | continue: a checkpoint
                                                 that cannot be written (full disk) ends the
                                                 run, or not */
    int threads;                              /* CPU threads; 0: all cores */
    int mixed_precision;                      /* MixedPrecision: no | bf16 */
    int pad_io_channels;                      /* PadIoChannels: auto | no | yes */
    /* data parallelism (dist.h): batch_size is the global batch, split over the ranks */
    double bucket_mb;                         /* gradient all-reduce bucket size, MiB */
    double dist_timeout;                      /* seconds a collective may take before the run stops */
    /* the KL autoencoder (objective vae, autoencoder.h): ch*ch_mult are diffusers'
       block_out_channels, num_res_blocks its layers_per_block, groups its norm_num_groups */
    int latent_channels;                      /* channels of the latent (the posterior's mean) */
    double scaling_factor;                    /* 1/std of the latents (ddpm encode measures it) */
    int recon_loss;                           /* ReconLossKind: l1 | l2, summed over pixels */
    double kl_weight;                         /* beta on the KL, summed over latent units */
    int learn_logvar;                         /* a learned scalar log variance on the
                                                 reconstruction (parameter "logvar") */
} Config;

void config_defaults(Config *c);
/* Loads a JSON object of known keys over the current values. "configs/x" also finds
 * "configs/x.json". Returns 0, or -1 with err naming the file and the key. */
int config_load_file(Config *c, const char *path, char *err, size_t err_size);
/* Applies "key=value". Returns 0, or -1 with err naming the key. */
int config_set(Config *c, const char *assignment, char *err, size_t err_size);
/* Loads config values from a JSON string (e.g. a checkpoint's metadata). */
int config_load_json(Config *c, const char *json, const char *origin, char *err, size_t err_size);
/* Checks ranges and cross-field rules. Returns 0, or -1 with err naming the key. */
int config_validate(const Config *c, char *err, size_t err_size);
/* A lower bound on the bytes training needs (activations of one batch, parameters with their
 * gradients, EMA and AdamW moments), from the config alone: checked before any allocation. */
double config_min_memory_bytes(const Config *c);
/* Compares the model-defining keys (those stored as a checkpoint's model_config). Returns 0
 * when equal, or -1 with err naming the first key that differs and both values. */
int config_model_mismatch(const Config *saved, const Config *current, char *err,
                          size_t err_size);
/* The whole config as a pretty JSON object; caller frees. */
char *config_to_json(const Config *c);
/* Just the model-defining keys, as JSON (stored in checkpoints); caller frees. */
char *config_model_json(const Config *c);
/* Class conditioning: the classes of the data (num_class_embeds, less the null class when
 * class_dropout > 0), and the null class's id (-1 when there is none). */
int config_num_classes(const Config *c);
int config_null_class(const Config *c);
/* The name of an enum key's value, e.g. ("loss", LOSS_HYBRID) -> "hybrid". */
const char *config_enum_name(const char *key, int value);

#endif
