/* Run configuration: one struct, one table of keys (src/config.c) that drives
 * parsing JSON config files, `key=value` overrides, validation and saving. */
#ifndef DDPM_CONFIG_H
#define DDPM_CONFIG_H

#include <stddef.h>

#define CONFIG_MAX_LEVELS 8
#define CONFIG_STR 256

typedef struct {
    /* model: the DDPM U-Net (diffusers UNet2DModel layout) */
    int image_size, in_channels, out_channels;
    int ch;                                   /* base channels; block i has ch*ch_mult[i] */
    int ch_mult[CONFIG_MAX_LEVELS], n_ch_mult;
    int num_res_blocks;
    int attn_resolutions[CONFIG_MAX_LEVELS], n_attn_resolutions;
    int groups;
    double dropout;
    /* diffusion */
    int timesteps;
    char beta_schedule[CONFIG_STR];           /* linear | cosine | quadratic | sigmoid */
    char prediction[CONFIG_STR];              /* eps | x0 | v */
    char variance[CONFIG_STR];                /* fixedsmall | fixedlarge (when not learned) */
    int learn_sigma;                          /* the model also outputs v: out_channels = 2 x in */
    char loss[CONFIG_STR];                    /* mse | hybrid (mse + T/1000 L_vlb) | kl (T L_t) */
    char timestep_sampler[CONFIG_STR];        /* uniform | loss_second_moment */
    int clip_denoised;                        /* clamp predicted x0 to [-1, 1] when sampling */
    /* data */
    char dataset[CONFIG_STR];                 /* fashion_mnist | mnist | cifar10 | folder */
    char data_path[CONFIG_STR];               /* IDX images file, CIFAR-10 batches directory,
                                                 or a folder of PNG/JPEG files (class subfolders) */
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
    int threads;                              /* CPU threads; 0: all cores */
    /* data parallelism (dist.h): batch_size is the global batch, split over the ranks */
    double bucket_mb;                         /* gradient all-reduce bucket size, MiB */
    double dist_timeout;                      /* seconds a collective may take before the run stops */
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
/* The whole config as a pretty JSON object; caller frees. */
char *config_to_json(const Config *c);
/* Just the model-defining keys, as JSON (stored in checkpoints); caller frees. */
char *config_model_json(const Config *c);

#endif
