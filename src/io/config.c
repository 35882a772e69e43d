/* Config keys, their types and ranges, in one table that drives every reader and
 * writer: JSON files, `key=value` overrides, validation and the saved effective config. */
#include "config.h"
#include "diffusion.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

/* KEY_ENUM: an int field holding the index of its value in `choices`: names are
 * parsed once, here, and the rest of the engine switches on the enums of config.h. */
typedef enum { KEY_INT, KEY_BOOL, KEY_U64, KEY_DOUBLE, KEY_STRING, KEY_ENUM, KEY_INT_LIST } KeyType;

typedef struct {
    const char *name;
    KeyType type;
    size_t offset;
    size_t count_offset;   /* KEY_INT_LIST: where the element count lives */
    double min, max;       /* numbers: inclusive range; lists: range of each element */
    const char *choices;   /* KEY_STRING, KEY_ENUM: allowed values separated by '|' (NULL: any
                              string); a KEY_ENUM's values are in its enum's order */
    int model;             /* defines the network or the diffusion process: stored in checkpoints */
} ConfigKey;

#define OFF(field) offsetof(Config, field)
#define NUM(name, type, lo, hi, model) {#name, type, OFF(name), 0, lo, hi, NULL, model}
#define LIST(name, lo, hi) {#name, KEY_INT_LIST, OFF(name), OFF(n_##name), lo, hi, NULL, 1}
#define STR(name, choices, model) {#name, KEY_STRING, OFF(name), 0, 0, 0, choices, model}
#define ENUM(name, choices, model) {#name, KEY_ENUM, OFF(name), 0, 0, 0, choices, model}

static const ConfigKey keys[] = {
    ENUM(objective, "ddpm|flow|classifier|vae", 1),
    NUM(image_size, KEY_INT, 4, 1024, 1),
    NUM(in_channels, KEY_INT, 1, 64, 1),
    NUM(out_channels, KEY_INT, 1, 128, 1),
    NUM(ch, KEY_INT, 1, 4096, 1),
    LIST(ch_mult, 1, 64),
    NUM(num_res_blocks, KEY_INT, 1, 16, 1),
    LIST(attn_resolutions, 1, 1024),
    NUM(groups, KEY_INT, 1, 1024, 1),
    NUM(dropout, KEY_DOUBLE, 0, 0.99, 1),
    NUM(num_classes, KEY_INT, 0, 100000, 1),
    NUM(classifier_t_max, KEY_INT, 0, 100000, 0),
    NUM(num_class_embeds, KEY_INT, 0, 1000000, 1),
    NUM(class_dropout, KEY_DOUBLE, 0, 0.99, 1),
    NUM(timesteps, KEY_INT, 2, 100000, 1),
    STR(beta_schedule, "linear|cosine|quadratic|sigmoid", 1),
    ENUM(prediction, "eps|x0|v", 1),
    ENUM(variance, "fixedsmall|fixedlarge", 1),
    NUM(learn_sigma, KEY_BOOL, 0, 1, 1),
    ENUM(loss, "mse|hybrid|kl", 0),
    ENUM(timestep_sampler, "uniform|loss_second_moment|logit_normal", 0),
    NUM(logit_mean, KEY_DOUBLE, -10, 10, 0),
    NUM(logit_std, KEY_DOUBLE, 0.01, 10, 0),
    NUM(flow_shift, KEY_DOUBLE, 0.001, 1000, 0),
    NUM(flow_steps, KEY_INT, 1, 100000, 0),
    NUM(clip_denoised, KEY_BOOL, 0, 1, 0),
    ENUM(dataset, "fashion_mnist|mnist|cifar10|latents|folder", 0),
    STR(data_path, NULL, 0),
    NUM(data_limit, KEY_INT, 0, 100000000, 0),
    NUM(skip_bad_images, KEY_BOOL, 0, 1, 0),
    NUM(hflip, KEY_BOOL, 0, 1, 0),
    NUM(batch_size, KEY_INT, 1, 65536, 0),
    NUM(steps, KEY_INT, 0, 100000000, 0),
    NUM(lr, KEY_DOUBLE, 0, 1, 0),
    NUM(warmup, KEY_INT, 0, 100000000, 0),
    NUM(beta1, KEY_DOUBLE, 0, 0.999999, 0),
    NUM(beta2, KEY_DOUBLE, 0, 0.999999999, 0),
    NUM(adam_eps, KEY_DOUBLE, 0, 1, 0),
    NUM(weight_decay, KEY_DOUBLE, 0, 10, 0),
    NUM(grad_clip, KEY_DOUBLE, 0, 1e9, 0),
    NUM(ema_decay, KEY_DOUBLE, 0, 1, 0),
    NUM(max_bad_steps, KEY_INT, 1, 1000000, 0),
    NUM(seed, KEY_U64, 0, 1.8e19, 0),
    STR(out_dir, NULL, 0),
    NUM(log_every, KEY_INT, 1, 100000000, 0),
    NUM(sample_every, KEY_INT, 0, 100000000, 0),
    NUM(sample_n, KEY_INT, 0, 4096, 0),
    NUM(ckpt_every, KEY_INT, 0, 100000000, 0),
    NUM(keep_ckpts, KEY_INT, 1, 1000, 0),
    ENUM(on_save_error, "stop|continue", 0),
    NUM(threads, KEY_INT, 0, 1024, 0),
    ENUM(mixed_precision, "no|bf16", 0),
    ENUM(pad_io_channels, "auto|no|yes", 0),
    NUM(bucket_mb, KEY_DOUBLE, 0.001, 4096, 0),
    NUM(dist_timeout, KEY_DOUBLE, 1, 1e6, 0),
    NUM(latent_channels, KEY_INT, 1, 64, 1),
    NUM(scaling_factor, KEY_DOUBLE, 1e-6, 1e6, 0),
    ENUM(recon_loss, "l1|l2", 0),
    NUM(kl_weight, KEY_DOUBLE, 0, 1e6, 0),
    NUM(learn_logvar, KEY_BOOL, 0, 1, 1),
};
#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

static const char *type_name(KeyType t) {
    switch (t) {
    case KEY_INT: return "an integer";
    case KEY_BOOL: return "true or false";
    case KEY_U64: return "a non-negative integer";
    case KEY_DOUBLE: return "a number";
    case KEY_STRING: return "a string";
    case KEY_ENUM: return "a string";
    case KEY_INT_LIST: return "a list of integers";
    }
    return "?";
}

void config_defaults(Config *c) {
    memset(c, 0, sizeof *c);
    *c = (Config){
        .image_size = 32, .in_channels = 1, .out_channels = 1, .ch = 64,
        .ch_mult = {1, 2, 2, 2}, .n_ch_mult = 4, .num_res_blocks = 2,
        .attn_resolutions = {16}, .n_attn_resolutions = 1, .groups = 32, .dropout = 0.1,
        .class_dropout = 0.1,
        .timesteps = 1000, .clip_denoised = 1, .data_limit = 0, .hflip = 1,
        .batch_size = 32, .steps = 1000, .lr = 2e-4, .warmup = 100,
        .beta1 = 0.9, .beta2 = 0.999, .adam_eps = 1e-8, .weight_decay = 0.0,
        .grad_clip = 1.0, .ema_decay = 0.9999, .max_bad_steps = 10, .seed = 0,
        .log_every = 10, .sample_every = 0, .sample_n = 16, .ckpt_every = 0, .keep_ckpts = 3,
        .threads = 0, .bucket_mb = 25, .dist_timeout = 300,
        .logit_mean = 0, .logit_std = 1, .flow_shift = 1, .flow_steps = 50,
        .latent_channels = 4, .scaling_factor = 1.0, .kl_weight = 1e-6,
    };
    strcpy(c->beta_schedule, "linear");
    c->prediction = PRED_EPS;
    c->variance = VAR_FIXED_SMALL;
    c->loss = LOSS_MSE;
    c->timestep_sampler = TIMESTEPS_UNIFORM;
    c->dataset = DATASET_FASHION_MNIST;
    strcpy(c->data_path, "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
    strcpy(c->out_dir, "runs/default");
    c->on_save_error = SAVE_ERROR_STOP;
}

static const ConfigKey *find_key(const char *name) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].name, name) == 0) return &keys[i];
    return NULL;
}

static int fail(char *err, size_t err_size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return -1;
}

/* The index of value among the '|'-separated choices, or -1. */
static int choice_index(const char *value, const char *choices) {
    size_t len = strlen(value);
    int index = 0;
    for (const char *p = choices; p && *p; index++) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && strncmp(p, value, n) == 0) return index;
        p = bar ? bar + 1 : NULL;
    }
    return -1;
}

/* The name of choice `index` (the inverse of choice_index), into out. */
static const char *choice_name(const char *choices, int index, char *out, size_t out_size) {
    const char *p = choices;
    for (int i = 0; i < index && p; i++) {
        p = strchr(p, '|');
        if (p) p++;
    }
    if (!p) die("internal: config choice %d of '%s'", index, choices);
    size_t n = strcspn(p, "|");
    snprintf(out, out_size, "%.*s", (int)n, p);
    return out;
}

const char *config_enum_name(const char *key, int value) {
    static char name[CONFIG_STR];
    for (size_t i = 0; i < N_KEYS; i++)
        if (keys[i].type == KEY_ENUM && strcmp(keys[i].name, key) == 0)
            return choice_name(keys[i].choices, value, name, sizeof name);
    die("internal: '%s' is not an enum config key", key);
}

static int set_number(Config *c, const ConfigKey *k, double v, const char *origin, char *err,
                      size_t err_size) {
    char *base = (char *)c;
    int integral = k->type != KEY_DOUBLE;
    if (!isfinite(v) || (integral && v != floor(v)))
        return fail(err, err_size, "%s: key '%s' must be %s", origin, k->name, type_name(k->type));
    if (v < k->min || v > k->max)
        return fail(err, err_size, "%s: key '%s' = %g is outside [%g, %g]", origin, k->name, v,
                    k->min, k->max);
    switch (k->type) {
    case KEY_INT:
    case KEY_BOOL: *(int *)(base + k->offset) = (int)v; break;
    case KEY_U64: *(unsigned long long *)(base + k->offset) = (unsigned long long)v; break;
    default: *(double *)(base + k->offset) = v; break;
    }
    return 0;
}

static int set_string(Config *c, const ConfigKey *k, const char *v, const char *origin, char *err,
                      size_t err_size) {
    if (strlen(v) >= CONFIG_STR)
        return fail(err, err_size, "%s: key '%s' is longer than %d characters", origin, k->name,
                    CONFIG_STR - 1);
    int index = k->choices ? choice_index(v, k->choices) : 0;
    if (index < 0)
        return fail(err, err_size, "%s: key '%s' = '%s' is not one of %s", origin, k->name, v,
                    k->choices);
    if (k->type == KEY_ENUM) *(int *)((char *)c + k->offset) = index;
    else strcpy((char *)c + k->offset, v);
    return 0;
}

static int set_list(Config *c, const ConfigKey *k, const cJSON *array, const char *origin,
                    char *err, size_t err_size) {
    int *values = (int *)((char *)c + k->offset);
    int *count = (int *)((char *)c + k->count_offset);
    int n = cJSON_GetArraySize(array);
    if (n > CONFIG_MAX_LEVELS)
        return fail(err, err_size, "%s: key '%s' has %d entries, at most %d allowed", origin,
                    k->name, n, CONFIG_MAX_LEVELS);
    int i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, array) {
        double v = cJSON_IsNumber(item) ? item->valuedouble : NAN;
        if (!isfinite(v) || v != floor(v) || v < k->min || v > k->max)
            return fail(err, err_size, "%s: key '%s' entry %d must be an integer in [%g, %g]",
                        origin, k->name, i, k->min, k->max);
        values[i++] = (int)v;
    }
    *count = n;
    return 0;
}

/* Sets one key from a JSON value: the single path for files, overrides and checkpoints. */
static int set_from_json(Config *c, const char *name, const cJSON *v, const char *origin,
                         char *err, size_t err_size) {
    const ConfigKey *k = find_key(name);
    if (!k) return fail(err, err_size, "%s: unknown key '%s'", origin, name);
    int ok_type = ((k->type == KEY_STRING || k->type == KEY_ENUM) && cJSON_IsString(v)) ||
                  (k->type == KEY_INT_LIST && cJSON_IsArray(v)) ||
                  (k->type == KEY_BOOL && (cJSON_IsBool(v) || cJSON_IsNumber(v))) ||
                  ((k->type == KEY_INT || k->type == KEY_U64 || k->type == KEY_DOUBLE) &&
                   cJSON_IsNumber(v));
    if (!ok_type)
        return fail(err, err_size, "%s: key '%s' must be %s", origin, name, type_name(k->type));
    if (k->type == KEY_STRING || k->type == KEY_ENUM)
        return set_string(c, k, v->valuestring, origin, err, err_size);
    if (k->type == KEY_INT_LIST) return set_list(c, k, v, origin, err, err_size);
    double number = cJSON_IsBool(v) ? (cJSON_IsTrue(v) ? 1 : 0) : v->valuedouble;
    return set_number(c, k, number, origin, err, err_size);
}

/* The first key that occurs twice in the object, or NULL: with duplicates the last one would
 * silently win, hiding an edit. Configs are small, so the quadratic scan is fine. */
static const char *duplicate_key(const cJSON *object) {
    for (const cJSON *a = object->child; a; a = a->next)
        for (const cJSON *b = a->next; b; b = b->next)
            if (strcmp(a->string, b->string) == 0) return a->string;
    return NULL;
}

int config_load_json(Config *c, const char *json, const char *origin, char *err, size_t err_size) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root) {
        const char *at = end ? end : "";
        return fail(err, err_size, "%s: not valid JSON, or text after the object (near '%.20s')",
                    origin, at);
    }
    int rc = 0;
    const char *duplicate = cJSON_IsObject(root) ? duplicate_key(root) : NULL;
    if (!cJSON_IsObject(root)) rc = fail(err, err_size, "%s: expected a JSON object", origin);
    else if (duplicate) rc = fail(err, err_size, "%s: key '%s' appears twice", origin, duplicate);
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        if (rc == 0) rc = set_from_json(c, item->string, item, origin, err, err_size);
    }
    cJSON_Delete(root);
    return rc;
}

static int is_directory(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int config_load_file(Config *c, const char *path, char *err, size_t err_size) {
    size_t size;
    char local_err[512];
    unsigned char *text = read_file(path, &size, local_err, sizeof local_err);
    char *with_ext = NULL;
    if (!text && !strstr(path, ".json") && !is_directory(path)) {
        with_ext = xmalloc(strlen(path) + 6);
        sprintf(with_ext, "%s.json", path);
        text = read_file(with_ext, &size, local_err, sizeof local_err);
    }
    int rc = text ? config_load_json(c, (char *)text, with_ext ? with_ext : path, err, err_size)
                  : fail(err, err_size, "%s", local_err);
    free(text);
    free(with_ext);
    return rc;
}

/* "key=value": the value is parsed as JSON when it can be (numbers, true, [1,2]),
 * else taken as a plain string, so `dataset=cifar10` needs no quotes. */
int config_set(Config *c, const char *assignment, char *err, size_t err_size) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return fail(err, err_size, "override '%s': expected key=value", assignment);
    char name[128];
    size_t n = (size_t)(eq - assignment);
    if (n >= sizeof name) return fail(err, err_size, "override '%s': key too long", assignment);
    memcpy(name, assignment, n);
    name[n] = 0;
    const ConfigKey *k = find_key(name);
    if (!k) return fail(err, err_size, "override: unknown key '%s'", name);
    int textual = k->type == KEY_STRING || k->type == KEY_ENUM;
    cJSON *v = textual ? cJSON_CreateString(eq + 1) : cJSON_Parse(eq + 1);
    if (!v) return fail(err, err_size, "override: key '%s' must be %s, got '%s'", name,
                        type_name(k->type), eq + 1);
    int rc = set_from_json(c, name, v, "override", err, err_size);
    cJSON_Delete(v);
    return rc;
}

/* Which keys go with objective=flow, and which do not. */
static int validate_flow_keys(const Config *c, const char *o, char *err, size_t err_size) {
    int flow = c->objective == OBJECTIVE_FLOW;
    if (!flow && c->timestep_sampler == TIMESTEPS_LOGIT_NORMAL)
        return fail(err, err_size, "%s: key 'timestep_sampler' = logit_normal needs objective=flow",
                    o);
    if (!flow) return 0;
    if (c->timestep_sampler == TIMESTEPS_LOSS_SECOND_MOMENT)
        return fail(err, err_size, "%s: key 'timestep_sampler' = loss_second_moment is for "
                    "objective=ddpm: objective=flow takes uniform or logit_normal", o);
    if (c->learn_sigma || c->loss != LOSS_MSE || c->prediction != PRED_EPS)
        return fail(err, err_size, "%s: objective=flow predicts the velocity eps - x0 with an MSE "
                    "loss: keys 'learn_sigma', 'loss' and 'prediction' must keep their defaults "
                    "(false, mse, eps)", o);
    return 0;
}

int config_validate(const Config *c, char *err, size_t err_size) {
    const char *o = "config";
    if (c->n_ch_mult < 1) return fail(err, err_size, "%s: key 'ch_mult' must not be empty", o);
    int size = c->image_size;
    for (int i = 0; i + 1 < c->n_ch_mult; i++) {
        if (size % 2) return fail(err, err_size, "%s: key 'image_size' = %d cannot be halved %d times",
                                  o, c->image_size, c->n_ch_mult - 1);
        size /= 2;
    }
    for (int i = 0; i < c->n_ch_mult; i++)
        if ((c->ch * c->ch_mult[i]) % c->groups)
            return fail(err, err_size, "%s: key 'groups' = %d does not divide the %d channels of level %d",
                        o, c->groups, c->ch * c->ch_mult[i], i);
    if (c->ch % 2) return fail(err, err_size, "%s: key 'ch' must be even (time embedding)", o);
    if (c->ch / 2 < 2) return fail(err, err_size, "%s: key 'ch' must be at least 4", o);
    if (c->dataset == DATASET_CIFAR10 && c->in_channels != 3)
        return fail(err, err_size, "%s: key 'in_channels' must be 3 for cifar10", o);
    if (c->dataset == DATASET_LATENTS && c->hflip)
        return fail(err, err_size, "%s: key 'hflip' must be false for latents (flip the images "
                    "before encoding them)", o);
    if (c->dataset == DATASET_FOLDER && c->in_channels != 1 && c->in_channels != 3)
        return fail(err, err_size, "%s: key 'in_channels' must be 1 (grey) or 3 (RGB) for "
                    "folder", o);
    if ((c->dataset == DATASET_FASHION_MNIST || c->dataset == DATASET_MNIST) && c->in_channels != 1)
        return fail(err, err_size, "%s: key 'in_channels' must be 1 for %s", o,
                    config_enum_name("dataset", c->dataset));
    int want_out = c->learn_sigma ? 2 * c->in_channels : c->in_channels;
    if (c->out_channels != want_out)
        return fail(err, err_size, "%s: key 'out_channels' must be %d (in_channels%s)", o, want_out,
                    c->learn_sigma ? " x 2 with learn_sigma" : "");
    if (c->learn_sigma && c->loss == LOSS_MSE)
        return fail(err, err_size, "%s: key 'loss' = mse cannot train learned variances "
                    "(learn_sigma): use hybrid or kl", o);
    if (c->objective == OBJECTIVE_VAE) {
        if (c->dataset == DATASET_LATENTS)
            return fail(err, err_size, "%s: objective 'vae' trains on images, not latents", o);
        if (c->dropout != 0 || c->learn_sigma)
            return fail(err, err_size, "%s: objective 'vae' needs dropout = 0 and learn_sigma = "
                        "false (AutoencoderKL has neither)", o);
    }
    if (c->beta1 >= 1 || c->beta2 >= 1)
        return fail(err, err_size, "%s: keys 'beta1' and 'beta2' must be below 1", o);
    if (c->num_class_embeds > 0 && c->objective != OBJECTIVE_DDPM && c->objective != OBJECTIVE_FLOW)
        return fail(err, err_size, "%s: key 'num_class_embeds' makes the U-Net class-conditional; "
                    "objective = %s has no class input", o, config_enum_name("objective", c->objective));
    if (c->objective == OBJECTIVE_CLASSIFIER && c->num_classes < 2)
        return fail(err, err_size, "%s: objective = classifier needs key 'num_classes' >= 2", o);
    if (c->classifier_t_max > c->timesteps)
        return fail(err, err_size, "%s: key 'classifier_t_max' = %d exceeds 'timesteps' = %d", o,
                    c->classifier_t_max, c->timesteps);
    if (c->num_class_embeds > 0 && config_num_classes(c) < 1)
        return fail(err, err_size, "%s: key 'num_class_embeds' = %d leaves no class beside the "
                    "null class (class_dropout > 0 makes the last row the null class)", o,
                    c->num_class_embeds);
    return validate_flow_keys(c, o, err, err_size);
}

int config_num_classes(const Config *c) {
    return c->num_class_embeds - (c->num_class_embeds > 0 && c->class_dropout > 0);
}

int config_null_class(const Config *c) {
    return c->num_class_embeds > 0 && c->class_dropout > 0 ? c->num_class_embeds - 1 : -1;
}

/* Saved activations per resolution in a residual block: two norms, two activations, two
 * convolutions. The real tape holds more (attention, skips, the time embedding). */
#define MIN_SAVED_TENSORS_PER_BLOCK 6
/* Float buffers per parameter: weights, gradients, EMA, AdamW's two moments. */
#define BUFFERS_PER_PARAMETER 5

double config_min_memory_bytes(const Config *c) {
    double floats = 0, side = c->image_size;
    /* Each level has num_res_blocks blocks going down and num_res_blocks + 1 coming up,
     * each with at least two 3x3 convolutions of C x C weights. */
    int blocks = 2 * c->num_res_blocks + 1;
    for (int i = 0; i < c->n_ch_mult; i++, side /= 2) {
        double channels = (double)c->ch * c->ch_mult[i];
        floats += (double)c->batch_size * side * side * channels * blocks *
                  MIN_SAVED_TENSORS_PER_BLOCK;
        floats += BUFFERS_PER_PARAMETER * 2.0 * 9.0 * channels * channels * blocks;
    }
    return floats * sizeof(float);
}

static cJSON *key_to_json(const Config *c, const ConfigKey *k) {
    const char *base = (const char *)c;
    switch (k->type) {
    case KEY_INT: return cJSON_CreateNumber(*(const int *)(base + k->offset));
    case KEY_BOOL: return cJSON_CreateBool(*(const int *)(base + k->offset));
    case KEY_U64: return cJSON_CreateNumber((double)*(const unsigned long long *)(base + k->offset));
    case KEY_DOUBLE: return cJSON_CreateNumber(*(const double *)(base + k->offset));
    case KEY_STRING: return cJSON_CreateString(base + k->offset);
    case KEY_ENUM: {
        char name[CONFIG_STR];
        return cJSON_CreateString(choice_name(k->choices, *(const int *)(base + k->offset), name,
                                              sizeof name));
    }
    case KEY_INT_LIST:
        return cJSON_CreateIntArray((const int *)(base + k->offset),
                                    *(const int *)(base + k->count_offset));
    }
    return NULL;
}

static char *keys_to_json(const Config *c, int model_only) {
    cJSON *root = cJSON_CreateObject();
    for (size_t i = 0; i < N_KEYS; i++)
        if (!model_only || keys[i].model)
            cJSON_AddItemToObject(root, keys[i].name, key_to_json(c, &keys[i]));
    char *text = model_only ? cJSON_PrintUnformatted(root) : cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) die("out of memory printing the config");
    return text;
}

int config_model_mismatch(const Config *saved, const Config *current, char *err,
                          size_t err_size) {
    for (size_t i = 0; i < N_KEYS; i++) {
        if (!keys[i].model) continue;
        cJSON *a = key_to_json(saved, &keys[i]), *b = key_to_json(current, &keys[i]);
        char *text_a = cJSON_PrintUnformatted(a), *text_b = cJSON_PrintUnformatted(b);
        int differs = !text_a || !text_b || strcmp(text_a, text_b) != 0;
        if (differs)
            fail(err, err_size, "key '%s' is %s in the checkpoint but %s in the config",
                 keys[i].name, text_a ? text_a : "?", text_b ? text_b : "?");
        cJSON_free(text_a);
        cJSON_free(text_b);
        cJSON_Delete(a);
        cJSON_Delete(b);
        if (differs) return -1;
    }
    return 0;
}

char *config_to_json(const Config *c) { return keys_to_json(c, 0); }
char *config_model_json(const Config *c) { return keys_to_json(c, 1); }
