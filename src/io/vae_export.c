/* `ddpm export` of an autoencoder checkpoint (objective vae): a folder that diffusers'
 * AutoencoderKL.from_pretrained(DIR) loads:
 *   DIR/config.json                          AutoencoderKL config (0.30)
 *   DIR/diffusion_pytorch_model.safetensors  the EMA weights (plain when there are none)
 * The learned log variance ("logvar") belongs to the loss, as in LDM, and is left out. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autoencoder.h"
#include "checkpoint.h"
#include "diffusers.h"
#include "safetensors.h"
#include "util.h"

static cJSON *repeated(const char *name, int count) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < count; i++) cJSON_AddItemToArray(a, cJSON_CreateString(name));
    return a;
}

static cJSON *vae_config_json(const Config *c) {
    cJSON *j = cJSON_CreateObject();
    int channels[CONFIG_MAX_LEVELS];
    for (int i = 0; i < c->n_ch_mult; i++) channels[i] = c->ch * c->ch_mult[i];
    cJSON_AddStringToObject(j, "_class_name", "AutoencoderKL");
    cJSON_AddStringToObject(j, "_diffusers_version", DIFFUSERS_VERSION);
    cJSON_AddNumberToObject(j, "in_channels", c->in_channels);
    cJSON_AddNumberToObject(j, "out_channels", c->out_channels);
    cJSON_AddItemToObject(j, "down_block_types", repeated("DownEncoderBlock2D", c->n_ch_mult));
    cJSON_AddItemToObject(j, "up_block_types", repeated("UpDecoderBlock2D", c->n_ch_mult));
    cJSON_AddItemToObject(j, "block_out_channels", cJSON_CreateIntArray(channels, c->n_ch_mult));
    cJSON_AddNumberToObject(j, "layers_per_block", c->num_res_blocks);
    cJSON_AddStringToObject(j, "act_fn", "silu");
    cJSON_AddNumberToObject(j, "latent_channels", c->latent_channels);
    cJSON_AddNumberToObject(j, "norm_num_groups", c->groups);
    cJSON_AddNumberToObject(j, "sample_size", c->image_size);
    cJSON_AddNumberToObject(j, "scaling_factor", c->scaling_factor);
    cJSON_AddBoolToObject(j, "force_upcast", 1);
    cJSON_AddBoolToObject(j, "use_quant_conv", 1);
    cJSON_AddBoolToObject(j, "use_post_quant_conv", 1);
    cJSON_AddBoolToObject(j, "mid_block_add_attention", 1);
    return j;
}

static int write_config(const char *dir, const Config *c, char *err, size_t err_size) {
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cJSON *j = vae_config_json(c);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) die("out of memory printing %s", path);
    int rc = write_file_atomic(path, text, strlen(text), err, err_size);
    free(text);
    return rc;
}

static int write_weights(const char *dir, const Net *m, const float *host, char *err,
                         size_t err_size) {
    float *torch = xmalloc(m->num_parameters * sizeof(float) + 4);
    StWriter w;
    st_writer_init(&w);
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->params[i];
        if (strcmp(p->name, "logvar") == 0) continue;
        param_to_torch(p, host + p->offset, torch + p->offset);
        st_writer_add(&w, p->name, ST_F32, p->ndim, p->shape, torch + p->offset);
    }
    st_writer_meta(&w, "format", "pt");
    char path[1024];
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    int rc = st_write(&w, path, err, err_size);
    st_writer_free(&w);
    free(torch);
    return rc;
}

int autoencoder_export(const char *ckpt_path, const Config *c, const char *dir, char *err,
                       size_t err_size) {
    Net *m = autoencoder_build(backend_cpu(), c, 1, 0);
    float *bufs[CKPT_BUFFERS] = {NULL, m->weights, NULL, NULL};
    int rc = checkpoint_read(ckpt_path, m, bufs, NULL, err, err_size);
    if (rc == 0) rc = make_dirs(dir, err, err_size);
    if (rc == 0) rc = write_weights(dir, m, m->weights, err, err_size);
    if (rc == 0) rc = write_config(dir, c, err, err_size);
    net_free(m);
    return rc;
}
