/* Times the training step (noising, forward, loss, backward, clipping, AdamW, EMA)
 * on random images and prints one JSON line with the median. Usage:
 *   bin/bench_train --config configs/fashion_mnist [--device cpu|cuda] [--warmup 3]
 *                   [--iters 10] [key=value ...]
 * Under a launcher's environment it runs data-parallel like `ddpm train` (batch_size is
 * the global batch), e.g. RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500
 * times the step with the NCCL gradient all-reduce at world size 1. Rank 0 prints. */
#include "bench_common.h"
#include "train.h"

int main(int argc, char **argv) {
    prefer_passive_omp_wait(argv);
    BenchArgs a = bench_parse(argc, argv);
    Dataset data;
    bench_random_dataset(&data, &a.cfg, 4 * a.cfg.batch_size);
    Dist *dist = dist_start(a.be, a.cfg.dist_timeout);
    const DistEnv env = dist->env;
    Trainer tr;
    trainer_init(&tr, a.be, &a.cfg, &data, dist);
    double *ms = xmalloc((size_t)a.iters * sizeof(double));
    for (int i = 0; i < a.warmup + a.iters; i++) {
        double start = now_seconds();
        trainer_step(&tr);
        a.be->synchronize();
        if (i >= a.warmup) ms[i - a.warmup] = (now_seconds() - start) * 1e3;
    }
    double median = bench_median(ms, a.iters);
    if (env.rank == 0)
        printf("{\"engine\": \"ddpm.c\", \"mode\": \"train\", \"backend\": \"%s\", \"batch\": %d, "
               "\"image_size\": %d, \"ch\": %d, \"dropout\": %g, \"parameters\": %zu, "
               "\"world_size\": %d, \"launcher\": \"%s\", \"allreduce\": %s, "
               "\"bucket_mb\": %g, \"ms_per_step\": %.3f, \"img_per_s\": %.2f}\n",
               a.be->name, a.cfg.batch_size, a.cfg.image_size, a.cfg.ch, a.cfg.dropout,
               tr.model->num_parameters, env.world_size, env.launcher,
               dist->ops.allreduce_mean_start ? "true" : "false", a.cfg.bucket_mb, median,
               a.cfg.batch_size / median * 1e3);
    free(ms);
    trainer_free(&tr);
    dist_finalize(dist);
    return 0;
}
