/* Label dropout, label checks and the classifier-free guidance denoiser (guidance.h). */
#include "guidance.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void label_dropout(int32_t *out, const int32_t *labels, int n, uint32_t sample0, double p,
                   int null_class, RngKey key) {
    for (int i = 0; i < n; i++)
        out[i] = p > 0 && philox_uniform(key, sample0 + (uint32_t)i, 0) < p ? null_class
                                                                               : labels[i];
}

int dataset_check_classes(const Dataset *d, const char *data_path, int num_classes, char *err,
                          size_t err_size) {
    char labels_path[1024];
    const char *source = data_path;
    if (idx_labels_path(data_path, labels_path, sizeof labels_path) == 0) source = labels_path;
    if (!d->labels) {
        snprintf(err, err_size, "%s: the data has no labels, and the model is class-conditional "
                 "(num_class_embeds > 0)", source);
        return -1;
    }
    for (int i = 0; i < d->count; i++)
        if (d->labels[i] < 0 || d->labels[i] >= num_classes) {
            snprintf(err, err_size, "%s: label %d of sample %d is outside [0, %d), the classes "
                     "of num_class_embeds (less the null class when class_dropout > 0)",
                     source, (int)d->labels[i], i, num_classes);
            return -1;
        }
    return 0;
}

/* The combined output of one guided call, or the inner denoiser's own at s = 0 and 1. */
static const float *guided_predict(Denoiser *self, const float *x, int n, float t) {
    GuidedDenoiser *g = (GuidedDenoiser *)self;
    Denoiser *inner = g->inner;
    if (!self->labels) die("classifier-free guidance needs a class for every sample");
    if (!g->doubled) {
        if (g->scale == 0.0f) {
            for (int i = 0; i < n; i++) g->pair_labels[i] = g->null_class;
            inner->labels = g->pair_labels;
        } else {
            inner->labels = self->labels;
        }
        return inner->predict(inner, x, n, t);
    }
    const Backend *be = self->be;
    size_t bytes = (size_t)n * self->sample_size * sizeof(float);
    be->copy(g->pair_x, x, bytes);
    be->copy((char *)g->pair_x + bytes, x, bytes);
    memcpy(g->pair_labels, self->labels, (size_t)n * sizeof(int32_t));
    for (int i = 0; i < n; i++) g->pair_labels[n + i] = g->null_class;
    inner->labels = g->pair_labels;
    const float *pair = inner->predict(inner, g->pair_x, 2 * n, t);
    const ModelOutput *o = &self->output;
    be->guidance_combine(g->out, pair, n, self->sample_size / (size_t)o->channels, o->channels,
                         o->learned_var, g->scale);
    return g->out;
}

int guided_denoiser_init(GuidedDenoiser *g, Denoiser *inner, float scale, int null_class,
                         char *err, size_t err_size) {
    memset(g, 0, sizeof *g);
    if (scale != 1.0f && null_class < 0) {
        snprintf(err, err_size, "guidance scale %g needs a null class: this model was trained "
                 "without label dropout (class_dropout = 0); only scale 1 samples it", scale);
        return -1;
    }
    int doubled = scale != 0.0f && scale != 1.0f;
    if (doubled && inner->max_batch < 2) {
        snprintf(err, err_size, "internal: guidance needs a denoiser planned for 2 samples or more");
        return -1;
    }
    const Backend *be = inner->be;
    size_t out_size = inner->sample_size * (inner->output.learned_var ? 2 : 1);
    *g = (GuidedDenoiser){
        .base = {.predict = guided_predict, .be = be,
                 .max_batch = doubled ? inner->max_batch / 2 : inner->max_batch,
                 .sample_size = inner->sample_size, .output = inner->output},
        .inner = inner, .scale = scale, .null_class = null_class, .doubled = doubled,
        .pair_labels = xmalloc((size_t)inner->max_batch * sizeof(int32_t)),
    };
    if (doubled) {
        g->pair_x = be->alloc((size_t)inner->max_batch * inner->sample_size * sizeof(float));
        g->out = be->alloc((size_t)g->base.max_batch * out_size * sizeof(float));
    }
    return 0;
}

void guided_denoiser_free(GuidedDenoiser *g) {
    const Backend *be = g->base.be;
    if (g->pair_x) be->release(g->pair_x);
    if (g->out) be->release(g->out);
    free(g->pair_labels);
    memset(g, 0, sizeof *g);
}

void feed_class_labels(const Backend *be, Net *net, const Config *c, const StepBatch *batch,
                       int32_t *host_class) {
    if (!batch->labels) die("internal: a class-conditional model got a batch without labels");
    RngKey key = {c->seed, RNG_STREAM_LABEL_DROP, (uint32_t)batch->step, 0};
    label_dropout(host_class, batch->labels + batch->sample0, batch->b, batch->sample0,
                  config_null_class(c) >= 0 ? c->class_dropout : 0.0, config_null_class(c), key);
    be->to_device(net_input_data(net, "class_labels"), host_class,
                  (size_t)batch->b * sizeof(int32_t));
}

void grid_class_labels(const Config *c, int n, int32_t *out) {
    for (int i = 0; i < n; i++) out[i] = i % config_num_classes(c);
}
