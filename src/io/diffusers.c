/* diffusers folders (see diffusers.h): export and import of DDPMPipeline layouts.
 * Config keys follow diffusers 0.30's UNet2DModel and DDPMScheduler. */
#include "diffusers.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autoencoder.h"
#include "checkpoint.h"
#include "safetensors.h"
#include "unet.h"
#include "util.h"

#define UNET_WEIGHTS "unet/diffusion_pytorch_model.safetensors"
#define UNET_CONFIG "unet/config.json"
#define SCHEDULER_CONFIG "scheduler/scheduler_config.json"

/* Engine name <-> diffusers name, for the schedule, the variance and the prediction. */
typedef struct {
    const char *engine, *diffusers;
} NamePair;

static const NamePair schedules[] = {
    {"linear", "linear"}, {"quadratic", "scaled_linear"},
    {"sigmoid", "sigmoid"}, {"cosine", "squaredcos_cap_v2"}, {NULL, NULL}};
static const NamePair variances[] = {
    {"fixedsmall", "fixed_small"}, {"fixedlarge", "fixed_large"}, {NULL, NULL}};
static const NamePair predictions[] = {
    {"eps", "epsilon"}, {"x0", "sample"}, {"v", "v_prediction"}, {NULL, NULL}};

static const char *to_diffusers(const NamePair *pairs, const char *engine) {
    for (; pairs->engine; pairs++)
        if (strcmp(pairs->engine, engine) == 0) return pairs->diffusers;
    return NULL;
}

static const char *to_engine(const NamePair *pairs, const char *diffusers) {
    for (; pairs->engine; pairs++)
        if (strcmp(pairs->diffusers, diffusers) == 0) return pairs->engine;
    return NULL;
}

static void join(char *out, size_t size, const char *dir, const char *name) {
    snprintf(out, size, "%s/%s", dir, name);
}

static int has_attention(const Config *c, int level) {
    for (int i = 0; i < c->n_attn_resolutions; i++)
        if (c->attn_resolutions[i] == c->image_size >> level) return 1;
    return 0;
}

/* ---------------- export ---------------- */

static cJSON *block_types(const Config *c, int up) {
    cJSON *types = cJSON_CreateArray();
    for (int i = 0; i < c->n_ch_mult; i++) {
        int level = up ? c->n_ch_mult - 1 - i : i;
        const char *name = has_attention(c, level) ? (up ? "AttnUpBlock2D" : "AttnDownBlock2D")
                                                   : (up ? "UpBlock2D" : "DownBlock2D");
        cJSON_AddItemToArray(types, cJSON_CreateString(name));
    }
    return types;
}

static cJSON *unet_config_json(const Config *c) {
    cJSON *j = cJSON_CreateObject();
    int channels[CONFIG_MAX_LEVELS];
    for (int i = 0; i < c->n_ch_mult; i++) channels[i] = c->ch * c->ch_mult[i];
    cJSON_AddStringToObject(j, "_class_name", "UNet2DModel");
    cJSON_AddStringToObject(j, "_diffusers_version", DIFFUSERS_VERSION);
    cJSON_AddNumberToObject(j, "sample_size", c->image_size);
    cJSON_AddNumberToObject(j, "in_channels", c->in_channels);
    cJSON_AddNumberToObject(j, "out_channels", c->out_channels);
    cJSON_AddItemToObject(j, "block_out_channels", cJSON_CreateIntArray(channels, c->n_ch_mult));
    cJSON_AddItemToObject(j, "down_block_types", block_types(c, 0));
    cJSON_AddItemToObject(j, "up_block_types", block_types(c, 1));
    cJSON_AddNumberToObject(j, "layers_per_block", c->num_res_blocks);
    cJSON_AddNumberToObject(j, "norm_num_groups", c->groups);
    cJSON_AddNumberToObject(j, "dropout", c->dropout);
    if (c->num_class_embeds > 0) {
        cJSON_AddNumberToObject(j, "num_class_embeds", c->num_class_embeds);
        /* private ('_') keys are ignored by diffusers: the null class's rate, for the import */
        cJSON_AddNumberToObject(j, "_ddpm_class_dropout", c->class_dropout);
    } else {
        cJSON_AddNullToObject(j, "num_class_embeds");
    }
    return j;
}

/* The UNet2DModel settings the engine's U-Net always has: the export writes them and
 * the import requires them. default_json is diffusers' value when a key is absent. */
static const struct {
    const char *key, *required_json, *default_json;
} fixed_unet_keys[] = {
    {"center_input_sample", "false", "false"},
    {"time_embedding_type", "\"positional\"", "\"positional\""},
    {"freq_shift", "1", "0"},
    {"flip_sin_to_cos", "false", "true"},
    {"mid_block_scale_factor", "1", "1"},
    {"downsample_padding", "0", "1"},
    {"downsample_type", "\"conv\"", "\"conv\""},
    {"upsample_type", "\"conv\"", "\"conv\""},
    {"act_fn", "\"silu\"", "\"silu\""},
    {"attention_head_dim", "null", "8"},
    {"attn_norm_num_groups", "null", "null"},
    {"norm_eps", "1e-06", "1e-05"},
    {"resnet_time_scale_shift", "\"default\"", "\"default\""},
    {"add_attention", "true", "true"},
    {"class_embed_type", "null", "null"},
    {"num_train_timesteps", "null", "null"},
};
#define N_FIXED_UNET_KEYS (sizeof fixed_unet_keys / sizeof fixed_unet_keys[0])

static void add_fixed_unet_keys(cJSON *j) {
    for (size_t i = 0; i < N_FIXED_UNET_KEYS; i++)
        cJSON_AddItemToObject(j, fixed_unet_keys[i].key,
                              cJSON_Parse(fixed_unet_keys[i].required_json));
}

static cJSON *scheduler_config_json(const Config *c) {
    double scale = 1000.0 / c->timesteps;   /* as in the engine's schedules (diffusion.c) */
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "_class_name", "DDPMScheduler");
    cJSON_AddStringToObject(j, "_diffusers_version", DIFFUSERS_VERSION);
    cJSON_AddNumberToObject(j, "num_train_timesteps", c->timesteps);
    cJSON_AddNumberToObject(j, "beta_start", scale * 1e-4);
    cJSON_AddNumberToObject(j, "beta_end", scale * 0.02);
    cJSON_AddStringToObject(j, "beta_schedule", to_diffusers(schedules, c->beta_schedule));
    cJSON_AddNullToObject(j, "trained_betas");
    cJSON_AddStringToObject(j, "variance_type", c->learn_sigma ? "learned_range"
                                                : to_diffusers(variances, config_enum_name("variance", c->variance)));
    cJSON_AddStringToObject(j, "prediction_type", to_diffusers(predictions, config_enum_name("prediction", c->prediction)));
    cJSON_AddBoolToObject(j, "clip_sample", c->clip_denoised);
    cJSON_AddNumberToObject(j, "clip_sample_range", 1.0);
    cJSON_AddBoolToObject(j, "thresholding", 0);
    return j;
}

static cJSON *model_index_json(void) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "_class_name", "DDPMPipeline");
    cJSON_AddStringToObject(j, "_diffusers_version", DIFFUSERS_VERSION);
    const char *unet[] = {"diffusers", "UNet2DModel"};
    const char *scheduler[] = {"diffusers", "DDPMScheduler"};
    cJSON_AddItemToObject(j, "scheduler", cJSON_CreateStringArray(scheduler, 2));
    cJSON_AddItemToObject(j, "unet", cJSON_CreateStringArray(unet, 2));
    return j;
}

/* Writes j (then frees it) as dir/name, atomically. */
static int write_json(const char *dir, const char *name, cJSON *j, char *err, size_t err_size) {
    char path[1024];
    join(path, sizeof path, dir, name);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) die("out of memory printing %s", path);
    size_t len = strlen(text);
    text = realloc(text, len + 2);
    text[len] = '\n';
    int rc = write_file_atomic(path, text, len + 1, err, err_size);
    free(text);
    return rc;
}

static int write_weights(const char *dir, const Net *m, const float *host, char *err,
                         size_t err_size) {
    float *torch = xmalloc(m->num_parameters * sizeof(float));
    StWriter w;
    st_writer_init(&w);
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->params[i];
        param_to_torch(p, host + p->offset, torch + p->offset);
        st_writer_add(&w, p->name, ST_F32, p->ndim, p->shape, torch + p->offset);
    }
    st_writer_meta(&w, "format", "pt");
    char path[1024];
    join(path, sizeof path, dir, UNET_WEIGHTS);
    int rc = st_write(&w, path, err, err_size);
    st_writer_free(&w);
    free(torch);
    return rc;
}

static int make_subdirs(const char *dir, char *err, size_t err_size) {
    char path[1024];
    join(path, sizeof path, dir, "unet");
    if (make_dirs(path, err, err_size) != 0) return -1;
    join(path, sizeof path, dir, "scheduler");
    return make_dirs(path, err, err_size);
}

int diffusers_export(const char *ckpt_path, const char *dir, char *err, size_t err_size) {
    Config c;
    config_defaults(&c);
    if (checkpoint_read_config(ckpt_path, &c, err, err_size) != 0) return -1;
    if (config_validate(&c, err, err_size) != 0) return -1;
    if (c.objective == OBJECTIVE_VAE) return autoencoder_export(ckpt_path, &c, dir, err, err_size);
    Net *m = unet_build(backend_cpu(), &c, 1, 0);
    float *host = xmalloc(m->num_parameters * sizeof(float));
    float *bufs[CKPT_BUFFERS] = {NULL, m->weights, NULL, NULL};
    int rc = checkpoint_read(ckpt_path, m, bufs, NULL, err, err_size);
    if (rc == 0) {
        m->be->to_host(host, m->weights, m->num_parameters * sizeof(float));
        rc = make_subdirs(dir, err, err_size);
    }
    if (rc == 0) rc = write_weights(dir, m, host, err, err_size);
    if (rc == 0) {
        cJSON *unet = unet_config_json(&c);
        add_fixed_unet_keys(unet);
        rc = write_json(dir, UNET_CONFIG, unet, err, err_size);
    }
    if (rc == 0) rc = write_json(dir, SCHEDULER_CONFIG, scheduler_config_json(&c), err, err_size);
    if (rc == 0) rc = write_json(dir, "model_index.json", model_index_json(), err, err_size);
    free(host);
    net_free(m);
    return rc;
}

/* ---------------- import ---------------- */

static cJSON *read_json(const char *dir, const char *name, char *path, size_t path_size,
                        char *err, size_t err_size) {
    size_t size;
    join(path, path_size, dir, name);
    char *text = (char *)read_file(path, &size, err, err_size);
    if (!text) return NULL;
    cJSON *j = cJSON_ParseWithLength(text, size);
    free(text);
    if (!j || !cJSON_IsObject(j)) {
        set_error(err, err_size, "%s: not a JSON object", path);
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

/* The key's value, or `fallback` (diffusers' default) when absent. */
static const cJSON *get(const cJSON *j, const char *key, const cJSON *fallback) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return v ? v : fallback;
}

static int get_int(const cJSON *j, const char *key, int fallback, int *out, const char *path,
                   char *err, size_t err_size) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v) {
        *out = fallback;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble > 1e6)
        return set_error(err, err_size, "%s: '%s' must be a non-negative integer", path, key);
    *out = (int)v->valuedouble;
    return 0;
}

static int check_fixed_unet_keys(const cJSON *j, const char *path, char *err, size_t err_size) {
    int rc = 0;
    for (size_t i = 0; i < N_FIXED_UNET_KEYS && rc == 0; i++) {
        cJSON *want = cJSON_Parse(fixed_unet_keys[i].required_json);
        cJSON *fallback = cJSON_Parse(fixed_unet_keys[i].default_json);
        const cJSON *have = get(j, fixed_unet_keys[i].key, fallback);
        if (!cJSON_Compare(have, want, 1)) {
            char *text = cJSON_PrintUnformatted(have);
            rc = set_error(err, err_size, "%s: '%s' = %s%s, the engine's U-Net needs %s", path,
                           fixed_unet_keys[i].key, text,
                           have == fallback ? " (diffusers' default: the key is absent)" : "",
                           fixed_unet_keys[i].required_json);
            free(text);
        }
        cJSON_Delete(want);
        cJSON_Delete(fallback);
    }
    return rc;
}

static int is_known_unet_key(const char *key) {
    static const char *const variable[] = {
        "sample_size", "in_channels", "out_channels", "block_out_channels", "down_block_types",
        "up_block_types", "layers_per_block", "norm_num_groups", "dropout", "num_class_embeds"};
    if (key[0] == '_') return 1;
    for (size_t i = 0; i < sizeof variable / sizeof variable[0]; i++)
        if (strcmp(key, variable[i]) == 0) return 1;
    for (size_t i = 0; i < N_FIXED_UNET_KEYS; i++)
        if (strcmp(key, fixed_unet_keys[i].key) == 0) return 1;
    return 0;
}

static int read_channels(const cJSON *j, Config *c, const char *path, char *err,
                         size_t err_size) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "block_out_channels");
    int n = cJSON_GetArraySize(list);
    if (!cJSON_IsArray(list) || n < 1 || n > CONFIG_MAX_LEVELS)
        return set_error(err, err_size, "%s: 'block_out_channels' must be a list of 1 to %d "
                         "integers", path, CONFIG_MAX_LEVELS);
    c->n_ch_mult = n;
    c->ch = (int)cJSON_GetArrayItem(list, 0)->valuedouble;
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetArrayItem(list, i);
        int channels = cJSON_IsNumber(v) ? (int)v->valuedouble : 0;
        if (c->ch < 1 || channels < 1 || channels % c->ch)
            return set_error(err, err_size, "%s: 'block_out_channels' entry %d must be a positive "
                             "multiple of the first entry", path, i);
        c->ch_mult[i] = channels / c->ch;
    }
    return 0;
}

/* down_block_types gives the attention levels; up_block_types must mirror it. */
static int read_block_types(const cJSON *j, Config *c, const char *path, char *err,
                            size_t err_size) {
    const cJSON *down = cJSON_GetObjectItemCaseSensitive(j, "down_block_types");
    const cJSON *up = cJSON_GetObjectItemCaseSensitive(j, "up_block_types");
    int n = c->n_ch_mult;
    if (cJSON_GetArraySize(down) != n || cJSON_GetArraySize(up) != n)
        return set_error(err, err_size, "%s: 'down_block_types' and 'up_block_types' must each "
                         "list %d blocks (one per 'block_out_channels' entry)", path, n);
    c->n_attn_resolutions = 0;
    for (int i = 0; i < n; i++) {
        const char *d = cJSON_GetStringValue(cJSON_GetArrayItem(down, i));
        const char *u = cJSON_GetStringValue(cJSON_GetArrayItem(up, n - 1 - i));
        int attn = d && strcmp(d, "AttnDownBlock2D") == 0;
        if (!d || (!attn && strcmp(d, "DownBlock2D") != 0))
            return set_error(err, err_size, "%s: 'down_block_types' entry %d = '%s' is not "
                             "DownBlock2D or AttnDownBlock2D", path, i, d ? d : "?");
        const char *want_up = attn ? "AttnUpBlock2D" : "UpBlock2D";
        if (!u || strcmp(u, want_up) != 0)
            return set_error(err, err_size, "%s: 'up_block_types' entry %d = '%s', expected %s "
                             "(mirroring 'down_block_types' entry %d)", path, n - 1 - i,
                             u ? u : "?", want_up, i);
        if (attn) c->attn_resolutions[c->n_attn_resolutions++] = c->image_size >> i;
    }
    return 0;
}

static int read_unet_config(const char *dir, Config *c, char *err, size_t err_size) {
    char path[1024];
    cJSON *j = read_json(dir, UNET_CONFIG, path, sizeof path, err, err_size);
    if (!j) return -1;
    int rc = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, j) {
        if (rc == 0 && !is_known_unet_key(item->string))
            rc = set_error(err, err_size, "%s: key '%s' is not supported by the engine's U-Net",
                           path, item->string);
    }
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(j, "dropout");
    if (rc == 0 && !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "sample_size")))
        rc = set_error(err, err_size, "%s: 'sample_size' (the image size) is required", path);
    if (rc == 0) rc = check_fixed_unet_keys(j, path, err, err_size);
    if (rc == 0) rc = get_int(j, "sample_size", 0, &c->image_size, path, err, err_size);
    if (rc == 0) rc = get_int(j, "in_channels", 3, &c->in_channels, path, err, err_size);
    if (rc == 0) rc = get_int(j, "out_channels", 3, &c->out_channels, path, err, err_size);
    if (rc == 0) rc = get_int(j, "layers_per_block", 2, &c->num_res_blocks, path, err, err_size);
    if (rc == 0) rc = get_int(j, "norm_num_groups", 32, &c->groups, path, err, err_size);
    if (rc == 0) rc = read_channels(j, c, path, err, err_size);
    if (rc == 0) rc = read_block_types(j, c, path, err, err_size);
    c->dropout = cJSON_IsNumber(dropout) ? dropout->valuedouble : 0.0;
    /* a class-conditional UNet2DModel; the null class only when the export said so */
    const cJSON *classes = cJSON_GetObjectItemCaseSensitive(j, "num_class_embeds");
    const cJSON *class_dropout = cJSON_GetObjectItemCaseSensitive(j, "_ddpm_class_dropout");
    c->num_class_embeds = 0;
    if (rc == 0 && classes && !cJSON_IsNull(classes))
        rc = get_int(j, "num_class_embeds", 0, &c->num_class_embeds, path, err, err_size);
    if (c->num_class_embeds > 0)   /* unconditional: the default stays, as a config has it */
        c->class_dropout = cJSON_IsNumber(class_dropout) ? class_dropout->valuedouble : 0.0;
    cJSON_Delete(j);
    return rc;
}

static int get_name(const cJSON *j, const char *key, const char *fallback, const NamePair *pairs,
                    char *out, const char *path, char *err, size_t err_size) {
    const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, key));
    if (!cJSON_GetObjectItemCaseSensitive(j, key)) name = fallback;
    const char *engine = name ? to_engine(pairs, name) : NULL;
    if (!engine) return set_error(err, err_size, "%s: '%s' = '%s' is not supported", path, key,
                                  name ? name : "?");
    snprintf(out, CONFIG_STR, "%s", engine);
    return 0;
}

/* get_name for an enum key of the config: the engine's name, parsed by config.c. */
static int get_enum(const cJSON *j, const char *key, const char *fallback, const NamePair *pairs,
                    Config *c, const char *config_key, const char *path, char *err,
                    size_t err_size) {
    char name[CONFIG_STR], assignment[CONFIG_STR + 64];
    if (get_name(j, key, fallback, pairs, name, path, err, err_size) != 0) return -1;
    snprintf(assignment, sizeof assignment, "%s=%s", config_key, name);
    return config_set(c, assignment, err, err_size);
}

/* beta_start and beta_end must be the engine's range for T (diffusion.c). */
static int check_beta_range(const cJSON *j, const Config *c, const char *path, char *err,
                            size_t err_size) {
    if (strcmp(c->beta_schedule, "cosine") == 0) return 0;   /* no range */
    double scale = 1000.0 / c->timesteps;
    const char *keys[2] = {"beta_start", "beta_end"};
    double want[2] = {scale * 1e-4, scale * 0.02}, fallback[2] = {1e-4, 0.02};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[i]);
        double have = v ? (cJSON_IsNumber(v) ? v->valuedouble : NAN) : fallback[i];
        if (!(fabs(have - want[i]) <= 1e-9 * want[i]))
            return set_error(err, err_size, "%s: '%s' = %g, the engine's %s schedule with %d "
                             "steps uses %g", path, keys[i], have, c->beta_schedule,
                             c->timesteps, want[i]);
    }
    return 0;
}

static int read_variance(const cJSON *j, Config *c, const char *path, char *err,
                         size_t err_size) {
    const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "variance_type"));
    c->learn_sigma = name && strcmp(name, "learned_range") == 0;
    if (c->learn_sigma) {
        c->loss = LOSS_HYBRID;
        return 0;
    }
    return get_enum(j, "variance_type", "fixed_small", variances, c, "variance", path, err,
                    err_size);
}

static int read_scheduler_config(const char *dir, Config *c, char *err, size_t err_size) {
    char path[1024];
    cJSON *j = read_json(dir, SCHEDULER_CONFIG, path, sizeof path, err, err_size);
    if (!j) return -1;
    const cJSON *clip = cJSON_GetObjectItemCaseSensitive(j, "clip_sample");
    const cJSON *betas = cJSON_GetObjectItemCaseSensitive(j, "trained_betas");
    const cJSON *thresholding = cJSON_GetObjectItemCaseSensitive(j, "thresholding");
    int rc = get_int(j, "num_train_timesteps", 1000, &c->timesteps, path, err, err_size);
    if (rc == 0 && betas && !cJSON_IsNull(betas))
        rc = set_error(err, err_size, "%s: 'trained_betas' is not supported (named schedules only)",
                       path);
    if (rc == 0 && cJSON_IsTrue(thresholding))
        rc = set_error(err, err_size, "%s: 'thresholding' = true is not supported", path);
    if (rc == 0)
        rc = get_name(j, "beta_schedule", "linear", schedules, c->beta_schedule, path, err,
                      err_size);
    if (rc == 0) rc = check_beta_range(j, c, path, err, err_size);
    if (rc == 0) rc = read_variance(j, c, path, err, err_size);
    if (rc == 0)
        rc = get_enum(j, "prediction_type", "epsilon", predictions, c, "prediction", path, err,
                      err_size);
    c->clip_denoised = clip ? cJSON_IsTrue(clip) : 1;
    cJSON_Delete(j);
    return rc;
}

/* Checkpoints saved by older diffusers name the attention projections differently;
 * diffusers itself still loads them, so the import accepts both. */
static const StTensor *find_tensor(const StFile *f, const char *name) {
    static const NamePair legacy[] = {{".to_q.", ".query."}, {".to_k.", ".key."},
                                      {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."},
                                      {NULL, NULL}};
    const StTensor *t = st_find(f, name);
    for (const NamePair *p = legacy; !t && p->engine; p++) {
        const char *at = strstr(name, p->engine);
        if (!at) continue;
        char old[192];
        snprintf(old, sizeof old, "%.*s%s%s", (int)(at - name), name, p->diffusers,
                 at + strlen(p->engine));
        t = st_find(f, old);
    }
    return t;
}

/* Every parameter of m from f (internal layout into host); every tensor of f used once. */
static int read_tensors(const StFile *f, const Net *m, float *host, char *err, size_t err_size) {
    char *used = xcalloc((size_t)f->count + 1, 1);
    float *scratch = xmalloc(m->num_parameters * sizeof(float));
    int rc = 0;
    for (int i = 0; i < m->n_params && rc == 0; i++) {
        const ParamInfo *p = &m->params[i];
        const StTensor *t = find_tensor(f, p->name);
        char have[96], want[96];
        if (!t) {
            rc = set_error(err, err_size, "%s: tensor '%s' is missing (the config's model "
                           "needs it)", f->path, p->name);
        } else if (t->dtype != ST_F32 || !st_shape_equals(t, p->ndim, p->shape)) {
            st_format_shape(t->shape, t->ndim, have, sizeof have);
            st_format_shape(p->shape, p->ndim, want, sizeof want);
            rc = set_error(err, err_size, "%s: tensor '%s' has shape %s%s, the config expects "
                           "%s F32", f->path, t->name, have,
                           t->dtype != ST_F32 ? " and is not F32" : "", want);
        } else {
            used[t - f->tensors] = 1;
            memcpy(scratch, t->data, p->numel * sizeof(float));   /* data may be unaligned */
            param_from_torch(p, scratch, host + p->offset);
        }
    }
    for (int i = 0; i < f->count && rc == 0; i++)
        if (!used[i])
            rc = set_error(err, err_size, "%s: unexpected tensor '%s' (not part of the model that "
                           "unet/config.json describes)", f->path, f->tensors[i].name);
    free(scratch);
    free(used);
    return rc;
}

static int write_checkpoint(const char *ckpt_path, Net *m, const Config *c, const float *host,
                            char *err, size_t err_size) {
    size_t bytes = m->num_parameters * sizeof(float);
    float *zeros = m->be->alloc(bytes);   /* alloc zeroes */
    float *ema = m->be->alloc(bytes);
    m->be->to_device(m->weights, host, bytes);
    m->be->to_device(ema, host, bytes);
    float *bufs[CKPT_BUFFERS] = {m->weights, ema, zeros, zeros};
    TrainProgress progress = {.world_size = 1};
    int rc = checkpoint_write(ckpt_path, m, c, bufs, &progress, NULL, 0, err, err_size);
    m->be->release(zeros);
    m->be->release(ema);
    return rc;
}

static int read_configs(const char *dir, Config *c, char *err, size_t err_size) {
    config_defaults(c);
    c->dataset = DATASET_FOLDER;   /* 1 or 3 channels; the data is the user's to name */
    c->data_path[0] = 0;
    if (read_unet_config(dir, c, err, err_size) != 0) return -1;
    if (read_scheduler_config(dir, c, err, err_size) != 0) return -1;
    char problem[512];
    if (config_validate(c, problem, sizeof problem) != 0)
        return set_error(err, err_size, "%s/" UNET_CONFIG ": %s", dir, problem);
    return 0;
}

int diffusers_import(const char *dir, const char *ckpt_path, char *err, size_t err_size) {
    Config c;
    if (read_configs(dir, &c, err, err_size) != 0) return -1;
    char path[1024];
    join(path, sizeof path, dir, UNET_WEIGHTS);
    StFile f;
    if (st_read(&f, path, err, err_size) != 0) return -1;
    Net *m = unet_build(backend_cpu(), &c, 1, 0);
    float *host = xmalloc(m->num_parameters * sizeof(float));
    int rc = read_tensors(&f, m, host, err, err_size);
    if (rc == 0) rc = write_checkpoint(ckpt_path, m, &c, host, err, err_size);
    free(host);
    net_free(m);
    st_free(&f);
    return rc;
}
