/* Times the training step (noising, forward, loss, backward, clipping, AdamW, EMA)
 * of a config on a backend, on random uint8 images, and prints one JSON line:
 * median ms per step, images/s, and the setting. Usage:
 *   bin/bench_train --config configs/fashion_mnist [--device cpu] [--warmup 3] [--iters 10] [key=value ...] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"
#include "util.h"

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int int_flag(int argc, char **argv, const char *flag, int fallback) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], flag) == 0) return atoi(argv[i + 1]);
    return fallback;
}

static void random_dataset(Dataset *d, const Config *c, int count) {
    d->count = count;
    d->height = d->width = c->image_size;
    d->channels = c->in_channels;
    size_t bytes = (size_t)count * c->image_size * c->image_size * c->in_channels;
    d->images = xmalloc(bytes);
    RngKey key = {12345, 99, 0};
    for (size_t i = 0; i < bytes; i++) d->images[i] = (uint8_t)(philox_word(key, 0, i) >> 24);
}

int main(int argc, char **argv) {
    Config cfg;
    char err[1024];
    config_defaults(&cfg);
    const char *device = "cpu";
    int warmup = int_flag(argc, argv, "--warmup", 3), iters = int_flag(argc, argv, "--iters", 10);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            if (config_load_file(&cfg, argv[++i], err, sizeof err) != 0) die("%s", err);
        } else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
            device = argv[++i];
        } else if (strcmp(argv[i], "--warmup") == 0 || strcmp(argv[i], "--iters") == 0) {
            i++;
        } else if (config_set(&cfg, argv[i], err, sizeof err) != 0) {
            die("%s", err);
        }
    }
    if (config_validate(&cfg, err, sizeof err) != 0) die("%s", err);
    const Backend *be = strcmp(device, "cuda") == 0 ? backend_cuda() : backend_cpu();
    if (!be) die("--device %s: not available in this build", device);
    Dataset data;
    random_dataset(&data, &cfg, 4 * cfg.batch_size);
    Trainer tr;
    trainer_init(&tr, be, &cfg, &data);
    double *ms = xmalloc((size_t)iters * sizeof(double));
    for (int i = 0; i < warmup + iters; i++) {
        double start = now_seconds();
        trainer_step(&tr);
        be->synchronize();
        if (i >= warmup) ms[i - warmup] = (now_seconds() - start) * 1e3;
    }
    qsort(ms, (size_t)iters, sizeof(double), compare_doubles);
    double median = ms[iters / 2];
    printf("{\"engine\": \"ddpm.c\", \"mode\": \"train\", \"backend\": \"%s\", \"batch\": %d, "
           "\"image_size\": %d, \"ch\": %d, \"parameters\": %zu, \"threads\": %d, "
           "\"ms_per_step\": %.3f, \"img_per_s\": %.2f}\n",
           be->name, cfg.batch_size, cfg.image_size, cfg.ch, tr.model->num_parameters,
           cfg.threads, median, cfg.batch_size / median * 1e3);
    free(ms);
    trainer_free(&tr);
    return 0;
}
