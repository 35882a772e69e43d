/* Checkpoint files (see checkpoint.h): one safetensors file per save, written atomically. */
#include "checkpoint.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetensors.h"
#include "util.h"

#define CKPT_FORMAT "ddpm.c checkpoint v1"

static const char *const prefixes[CKPT_BUFFERS] = {"", "ema.", "adam_m.", "adam_v."};

void checkpoint_path(char *path, size_t path_size, const char *dir, long step) {
    snprintf(path, path_size, "%s/ckpt_%08ld.safetensors", dir, step);
}

static void put_long(StWriter *w, const char *key, long value) {
    char text[32];
    snprintf(text, sizeof text, "%ld", value);
    st_writer_meta(w, key, text);
}

int checkpoint_write(const char *path, const Net *m, const Config *cfg,
                     float *const bufs[CKPT_BUFFERS], const TrainProgress *progress,
                     const CheckpointExtra *extras, int n_extras, char *err, size_t err_size) {
    size_t P = m->num_parameters;
    float *host = xmalloc(CKPT_BUFFERS * P * sizeof(float));
    float *torch = xmalloc(CKPT_BUFFERS * P * sizeof(float));
    StWriter w;
    st_writer_init(&w);
    char name[160];
    for (int b = 0; b < CKPT_BUFFERS; b++) {
        if (!bufs[b]) continue;
        m->be->to_host(host + b * P, bufs[b], P * sizeof(float));
        for (int i = 0; i < m->n_params; i++) {
            const ParamInfo *p = &m->params[i];
            float *dst = torch + b * P + p->offset;
            param_to_torch(p, host + b * P + p->offset, dst);
            snprintf(name, sizeof name, "%s%s", prefixes[b], p->name);
            st_writer_add(&w, name, ST_F32, p->ndim, p->shape, dst);
        }
    }
    for (int i = 0; i < n_extras; i++)
        st_writer_add(&w, extras[i].name, extras[i].dtype, extras[i].ndim, extras[i].shape,
                      extras[i].data);
    char *config_json = config_to_json(cfg);
    char *model_json = config_model_json(cfg);
    st_writer_meta(&w, "format", CKPT_FORMAT);
    st_writer_meta(&w, "config", config_json);
    st_writer_meta(&w, "model_config", model_json);
    put_long(&w, "step", progress->step);
    put_long(&w, "adam_steps", progress->adam_steps);
    put_long(&w, "skipped_steps", progress->skipped_steps);
    put_long(&w, "data_epoch", progress->data_epoch);
    put_long(&w, "data_index", progress->data_index);
    put_long(&w, "world_size", progress->world_size);
    int rc = st_write(&w, path, err, err_size);
    st_writer_free(&w);
    free(config_json);
    free(model_json);
    free(host);
    free(torch);
    return rc;
}

/* Copies one prefix's tensors into a host buffer in the internal layout. */
static int read_buffer(const StFile *f, const Net *m, const char *prefix, float *host,
                       char *err, size_t err_size) {
    char name[160], have[96], want[96];
    float *scratch = NULL;
    int rc = 0;
    for (int i = 0; i < m->n_params && rc == 0; i++) {
        const ParamInfo *p = &m->params[i];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        const StTensor *t = st_find(f, name);
        if (!t) {
            snprintf(err, err_size, "%s: tensor '%s' is missing (the config's model needs it)",
                     f->path, name);
            rc = -1;
        } else if (t->dtype != ST_F32 || !st_shape_equals(t, p->ndim, p->shape)) {
            st_format_shape(t->shape, t->ndim, have, sizeof have);
            st_format_shape(p->shape, p->ndim, want, sizeof want);
            snprintf(err, err_size, "%s: tensor '%s' has shape %s%s, the config expects %s F32",
                     f->path, name, have, t->dtype != ST_F32 ? " and a non-F32 dtype" : "", want);
            rc = -1;
        } else {
            scratch = realloc(scratch, p->numel * sizeof(float));
            memcpy(scratch, t->data, p->numel * sizeof(float));   /* data may be unaligned */
            param_from_torch(p, scratch, host + p->offset);
        }
    }
    free(scratch);
    return rc;
}

static int parse_long(const StFile *f, const char *key, long *out, char *err, size_t err_size) {
    const char *text = st_meta(f, key);
    char *end;
    if (!text) return 0;   /* absent: keep the default */
    long v = strtol(text, &end, 10);
    if (*text == 0 || *end != 0 || v < 0) {
        snprintf(err, err_size, "%s: metadata '%s' = '%s' is not a non-negative integer", f->path,
                 key, text);
        return -1;
    }
    *out = v;
    return 0;
}

static int read_progress(const StFile *f, TrainProgress *progress, char *err, size_t err_size) {
    long world = 1;
    memset(progress, 0, sizeof *progress);
    if (parse_long(f, "step", &progress->step, err, err_size) ||
        parse_long(f, "adam_steps", &progress->adam_steps, err, err_size) ||
        parse_long(f, "skipped_steps", &progress->skipped_steps, err, err_size) ||
        parse_long(f, "data_epoch", &progress->data_epoch, err, err_size) ||
        parse_long(f, "data_index", &progress->data_index, err, err_size) ||
        parse_long(f, "world_size", &world, err, err_size))
        return -1;
    progress->world_size = (int)world;
    return 0;
}

int checkpoint_read(const char *path, const Net *m, float *const bufs[CKPT_BUFFERS],
                    TrainProgress *progress, char *err, size_t err_size) {
    StFile f;
    if (st_read(&f, path, err, err_size) != 0) return -1;
    size_t P = m->num_parameters;
    float *host = xmalloc(P * sizeof(float));
    char first_ema[128] = "";
    if (m->n_params > 0) snprintf(first_ema, sizeof first_ema, "ema.%s", m->params[0].name);
    int has_ema = m->n_params > 0 && st_find(&f, first_ema) != NULL;
    int rc = progress ? read_progress(&f, progress, err, err_size) : 0;
    for (int b = 0; b < CKPT_BUFFERS && rc == 0; b++) {
        if (!bufs[b]) continue;
        const char *prefix = (b == CKPT_EMA && !has_ema) ? "" : prefixes[b];
        rc = read_buffer(&f, m, prefix, host, err, err_size);
        if (rc == 0) m->be->to_device(bufs[b], host, P * sizeof(float));
    }
    free(host);
    st_free(&f);
    return rc;
}

static size_t extra_bytes(const CheckpointExtra *e) {
    size_t n = e->dtype == ST_F64 || e->dtype == ST_I64 ? 8 : e->dtype == ST_U8 ? 1 : 4;
    for (int i = 0; i < e->ndim; i++) n *= (size_t)e->shape[i];
    return n;
}

int checkpoint_read_extras(const char *path, CheckpointExtra *extras, int n_extras, char *err,
                           size_t err_size) {
    StFile f;
    if (st_read(&f, path, err, err_size) != 0) return -1;
    int found = 0;
    for (int i = 0; i < n_extras && found >= 0; i++) {
        const StTensor *t = st_find(&f, extras[i].name);
        if (!t) continue;
        if (t->dtype != extras[i].dtype || t->nbytes != extra_bytes(&extras[i])) {
            snprintf(err, err_size, "%s: tensor '%s' does not have the expected dtype and size",
                     path, extras[i].name);
            found = -1;
        } else {
            memcpy(extras[i].data, t->data, t->nbytes);
            found++;
        }
    }
    st_free(&f);
    return found;
}

int checkpoint_read_config(const char *path, Config *cfg, char *err, size_t err_size) {
    StFile f;
    if (st_read(&f, path, err, err_size) != 0) return -1;
    const char *json = st_meta(&f, "config");
    int rc;
    if (!json) {
        snprintf(err, err_size, "%s: no 'config' in the metadata (not a ddpm.c checkpoint)", path);
        rc = -1;
    } else {
        char origin[512];
        snprintf(origin, sizeof origin, "%s (metadata 'config')", path);
        rc = config_load_json(cfg, json, origin, err, err_size);
    }
    st_free(&f);
    return rc;
}

/* Steps of the checkpoints in dir, from file names ckpt_<step>.safetensors. */
static int list_steps(const char *dir, long **steps) {
    DIR *d = opendir(dir);
    int count = 0, cap = 0;
    *steps = NULL;
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long step;
        char tail[32];
        if (sscanf(e->d_name, "ckpt_%ld.%31s", &step, tail) != 2 || strcmp(tail, "safetensors"))
            continue;
        if (count == cap) {
            cap = cap ? 2 * cap : 16;
            *steps = realloc(*steps, (size_t)cap * sizeof(long));
            if (!*steps) die("out of memory listing %s", dir);
        }
        (*steps)[count++] = step;
    }
    closedir(d);
    return count;
}

static int compare_longs(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

int checkpoint_steps(const char *dir, long **steps) {
    int count = list_steps(dir, steps);
    if (count > 1) qsort(*steps, (size_t)count, sizeof(long), compare_longs);
    return count;
}

int checkpoint_find_latest(const char *dir, char *path, size_t path_size) {
    long *steps;
    int count = checkpoint_steps(dir, &steps);
    long best = count > 0 ? steps[count - 1] : -1;
    free(steps);
    if (best < 0) return -1;
    checkpoint_path(path, path_size, dir, best);
    return 0;
}

void checkpoint_prune(const char *dir, int keep) {
    long *steps;
    int count = checkpoint_steps(dir, &steps);
    char path[1024];
    for (int i = 0; i + keep < count; i++) {
        checkpoint_path(path, sizeof path, dir, steps[i]);
        if (unlink(path) != 0) warn("could not remove old checkpoint %s", path);
    }
    free(steps);
}

int checkpoint_remove_partial(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    char path[1024];
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "ckpt_", 5) != 0 || len < 4 || strcmp(e->d_name + len - 4, ".tmp"))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) == 0) removed++;
        else warn("could not remove the partial checkpoint %s", path);
    }
    closedir(d);
    return removed;
}

int checkpoint_set_aside(const char *path, char *aside, size_t aside_size) {
    snprintf(aside, aside_size, "%s.unreadable", path);
    return rename(path, aside);
}
