/* The first stage at inference (latent.h). */
#include "latent.h"

#include <stdlib.h>
#include <string.h>

#include "autoencoder.h"
#include "checkpoint.h"
#include "safetensors.h"
#include "util.h"

int first_stage_open(FirstStage *fs, const char *path, const Backend *be, int batch,
                     int decoder, char *err, size_t err_size) {
    memset(fs, 0, sizeof *fs);
    config_defaults(&fs->cfg);
    if (checkpoint_read_config(path, &fs->cfg, err, err_size) != 0) return -1;
    if (fs->cfg.objective != OBJECTIVE_VAE) {
        snprintf(err, err_size, "%s: not an autoencoder checkpoint (objective is '%s', not 'vae')",
                 path, config_enum_name("objective", fs->cfg.objective));
        return -1;
    }
    char why[512];
    if (config_validate(&fs->cfg, why, sizeof why) != 0) {
        snprintf(err, err_size, "%s: %s", path, why);
        return -1;
    }
    fs->be = be;
    fs->batch = batch;
    fs->side = autoencoder_latent_size(&fs->cfg);
    fs->net = decoder ? autoencoder_decoder_build(be, &fs->cfg, batch)
                      : autoencoder_encoder_build(be, &fs->cfg, batch);
    float *bufs[CKPT_BUFFERS] = {NULL, fs->net->weights, NULL, NULL};
    if (checkpoint_read(path, fs->net, bufs, NULL, err, err_size) != 0) {
        first_stage_free(fs);
        return -1;
    }
    fs->net->training = 0;
    if (!decoder) {
        fs->z = be->alloc((size_t)batch * first_stage_latent_size(fs) * sizeof(float));
        fs->noise = be->alloc((size_t)batch * first_stage_latent_size(fs) * sizeof(float));
    }
    return 0;
}

void first_stage_free(FirstStage *fs) {
    if (!fs->be) return;
    fs->be->release(fs->z);
    fs->be->release(fs->noise);
    net_free(fs->net);
    memset(fs, 0, sizeof *fs);
}

size_t first_stage_latent_size(const FirstStage *fs) {
    return (size_t)fs->side * fs->side * fs->cfg.latent_channels;
}

size_t first_stage_image_size(const FirstStage *fs) {
    return (size_t)fs->cfg.image_size * fs->cfg.image_size * fs->cfg.in_channels;
}

void first_stage_encode(FirstStage *fs, const float *images, int n, int sample, uint64_t seed,
                        uint32_t first, float scale, float *latents) {
    const Backend *be = fs->be;
    const size_t D = first_stage_image_size(fs), L = first_stage_latent_size(fs);
    const int hw = fs->side * fs->side;
    for (int at = 0; at < n; at += fs->batch) {
        int b = n - at < fs->batch ? n - at : fs->batch;
        be->to_device(net_input_data(fs->net, "sample"), images + (size_t)at * D,
                      (size_t)b * D * sizeof(float));
        net_forward(fs->net, b, NULL, (RngKey){0});
        if (sample)
            be->normal_fill(fs->noise, b, L,
                            (RngKey){seed, RNG_STREAM_POSTERIOR, 0, first + (uint32_t)at});
        else
            be->fill(fs->noise, 0.0f, (size_t)b * L);   /* mean + std * 0 = the mean */
        be->gaussian_sample_forward(fs->z, net_output_data(fs->net, "moments"), fs->noise, b, hw,
                                    fs->cfg.latent_channels);
        float *out = latents + (size_t)at * L;
        be->to_host(out, fs->z, (size_t)b * L * sizeof(float));
        for (size_t i = 0; i < (size_t)b * L; i++) out[i] *= scale;
    }
}

void first_stage_decode(FirstStage *fs, const float *latents, int n, float scale,
                        float *images) {
    const Backend *be = fs->be;
    const size_t D = first_stage_image_size(fs), L = first_stage_latent_size(fs);
    float *unscaled = xmalloc((size_t)fs->batch * L * sizeof(float));
    for (int at = 0; at < n; at += fs->batch) {
        int b = n - at < fs->batch ? n - at : fs->batch;
        for (size_t i = 0; i < (size_t)b * L; i++)
            unscaled[i] = latents[(size_t)at * L + i] / scale;
        be->to_device(net_input_data(fs->net, "latent"), unscaled, (size_t)b * L * sizeof(float));
        net_forward(fs->net, b, NULL, (RngKey){0});
        be->to_host(images + (size_t)at * D, net_output_data(fs->net, "sample"),
                    (size_t)b * D * sizeof(float));
    }
    free(unscaled);
}

int first_stage_record_scaling_factor(const char *path, double scaling_factor, char *err,
                                      size_t err_size) {
    Config cfg;
    config_defaults(&cfg);
    if (checkpoint_read_config(path, &cfg, err, err_size) != 0) return -1;
    cfg.scaling_factor = scaling_factor;
    StFile f;
    if (st_read(&f, path, err, err_size) != 0) return -1;
    StWriter w;
    st_writer_init(&w);
    for (int i = 0; i < f.count; i++) {
        const StTensor *t = &f.tensors[i];
        st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    char *config_json = config_to_json(&cfg);
    for (int i = 0; i < f.meta_count; i++)
        st_writer_meta(&w, f.meta_keys[i],
                       strcmp(f.meta_keys[i], "config") == 0 ? config_json : f.meta_values[i]);
    int rc = st_write(&w, path, err, err_size);
    free(config_json);
    st_writer_free(&w);
    st_free(&f);
    return rc;
}
