/* Times the training step (noising, forward, loss, backward, clipping, AdamW, EMA)
 * on random images and prints one JSON line with the median. Usage:
 *   bin/bench_train --config configs/fashion_mnist [--device cpu|cuda] [--warmup 3]
 *                   [--iters 10] [key=value ...] */
#include "bench_common.h"
#include "train.h"

int main(int argc, char **argv) {
    BenchArgs a = bench_parse(argc, argv);
    Dataset data;
    bench_random_dataset(&data, &a.cfg, 4 * a.cfg.batch_size);
    Trainer tr;
    trainer_init(&tr, a.be, &a.cfg, &data);
    double *ms = xmalloc((size_t)a.iters * sizeof(double));
    for (int i = 0; i < a.warmup + a.iters; i++) {
        double start = now_seconds();
        trainer_step(&tr);
        a.be->synchronize();
        if (i >= a.warmup) ms[i - a.warmup] = (now_seconds() - start) * 1e3;
    }
    double median = bench_median(ms, a.iters);
    printf("{\"engine\": \"ddpm.c\", \"mode\": \"train\", \"backend\": \"%s\", \"batch\": %d, "
           "\"image_size\": %d, \"ch\": %d, \"dropout\": %g, \"parameters\": %zu, "
           "\"ms_per_step\": %.3f, \"img_per_s\": %.2f}\n",
           a.be->name, a.cfg.batch_size, a.cfg.image_size, a.cfg.ch, a.cfg.dropout,
           tr.model->num_parameters, median, a.cfg.batch_size / median * 1e3);
    free(ms);
    trainer_free(&tr);
    return 0;
}
