/* Times the training step (noising, forward, loss, backward, clipping, AdamW, EMA)
 * on random images and prints one JSON line: p10/p50/p90 of the step, the host's time to
 * enqueue it, the FLOP rate (the yardstick's count: 3 x the forward's multiply-adds x 2)
 * against the machine's SGEMM peak (CPU), and a profile of where the time goes. Usage:
 *   bin/bench_train --config configs/fashion_mnist [--device cpu|cuda] [--warmup 3]
 *                   [--iters 10] [--profile 2] [--sgemm-peak 2048] [key=value ...]
 * The profile runs after the timed steps (it synchronises around every op, so it is
 * slower): time per category of op per step, the optimizer (global norm, AdamW, EMA)
 * timed on its own, and "other" for the rest of the step (data, noising, loss).
 * Under a launcher's environment it runs data-parallel like `ddpm train` (batch_size is
 * the global batch), e.g. RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500
 * times the step with the NCCL gradient all-reduce at world size 1. Rank 0 prints. */
#include "bench_common.h"
#include "train.h"

typedef struct {
    BenchSpread step;
    double enqueue_ms;   /* median time until trainer_step returned, before synchronising */
} StepTimes;

static StepTimes time_steps(Trainer *tr, const BenchArgs *a) {
    double *ms = xmalloc((size_t)a->iters * sizeof(double));
    double *enqueue = xmalloc((size_t)a->iters * sizeof(double));
    for (int i = 0; i < a->warmup + a->iters; i++) {
        double start = now_seconds();
        trainer_step(tr);
        double returned = now_seconds();
        a->be->synchronize();
        if (i >= a->warmup) {
            ms[i - a->warmup] = (now_seconds() - start) * 1e3;
            enqueue[i - a->warmup] = (returned - start) * 1e3;
        }
    }
    StepTimes t = {.step = bench_spread(ms, a->iters), .enqueue_ms = bench_median(enqueue, a->iters)};
    free(ms);
    free(enqueue);
    return t;
}

/* The optimizer's share: the passes over the parameters a step makes (global norm, AdamW,
 * EMA), per step; the weights it leaves are not used again (the profile runs last). */
static double time_optimizer(Trainer *tr, int reps) {
    const Backend *be = tr->be;
    Net *m = tr->model;
    size_t n = m->num_parameters;
    be->synchronize();
    double start = now_seconds();
    for (int r = 0; r < reps; r++) {
        be->global_norm(tr->grad_norm, m->grads, n);
        adamw_step(be, &tr->cfg, m->weights, m->compute_weights, m->grads, tr->adam_m,
                   tr->adam_v, n, tr->progress.adam_steps + 1, tr->cfg.lr, 1.0);
        be->ema_update(tr->ema, m->weights, n, (float)tr->cfg.ema_decay);
    }
    be->synchronize();
    return (now_seconds() - start) * 1e3 / reps;
}

/* Profiled steps: categories per step, plus the optimizer and the rest. */
static void print_profile(Trainer *tr, int steps) {
    Profile prof = {.be = tr->be};
    tr->model->profile = &prof;
    double start = profile_begin(&prof);
    for (int i = 0; i < steps; i++) trainer_step(tr);
    tr->be->synchronize();
    double step_ms = (now_seconds() - start) * 1e3 / steps;
    tr->model->profile = NULL;
    double optimizer_ms = time_optimizer(tr, steps);
    double nodes_ms = 0;
    for (int c = 0; c < PROF_CATEGORIES; c++) nodes_ms += prof.ms[c] / steps;
    /* the profiled step runs each conv's weight gradient twice: count it once */
    double repeated_ms = prof.ms[PROF_CONV_BACKWARD_WEIGHTS] / steps;
    double other_ms = step_ms - repeated_ms - nodes_ms - optimizer_ms;
    bench_print_profile(&prof, steps, "optimizer", optimizer_ms);
    printf(", \"other_ms\": %.3f, \"profiled_step_ms\": %.3f", other_ms > 0 ? other_ms : 0,
           step_ms - repeated_ms);
}

int main(int argc, char **argv) {
    prefer_passive_omp_wait(argv);
    BenchArgs a = bench_parse(argc, argv);
    Dataset data;
    bench_random_dataset(&data, &a.cfg, 4 * a.cfg.batch_size);
    Dist *dist = dist_start(a.be, a.cfg.dist_timeout);
    const DistEnv env = dist->env;
    Trainer tr;
    trainer_init(&tr, a.be, &a.cfg, &data, dist);
    StepTimes t = time_steps(&tr, &a);
    const int cpu = strcmp(a.be->name, "cpu") == 0;
    const double flops_per_image = 3 * net_forward_flops(tr.model);
    const double gflops = flops_per_image * a.cfg.batch_size / t.step.p50 / 1e6;
    const double peak = cpu && a.sgemm_n ? bench_sgemm_peak_gflops(a.sgemm_n, 5) : 0;
    if (env.rank == 0) {
        printf("{\"engine\": \"ddpm.c\", \"mode\": \"train\", \"backend\": \"%s\", "
               "\"commit\": \"%s\", \"precision\": \"%s\", \"threads\": %d, \"blas_core\": \"%s\", \"batch\": %d, "
               "\"image_size\": %d, \"ch\": %d, \"dropout\": %g, \"parameters\": %zu, "
               "\"world_size\": %d, \"launcher\": \"%s\", \"allreduce\": %s, "
               "\"bucket_mb\": %g, \"iters\": %d, \"p10_ms\": %.3f, \"p50_ms\": %.3f, "
               "\"p90_ms\": %.3f, \"ms_per_step\": %.3f, \"host_enqueue_ms\": %.3f, "
               "\"img_per_s\": %.2f, \"gflop_per_img\": %.3f, \"gflops\": %.1f",
               a.be->name, DDPM_COMMIT, bench_precision(&a), omp_get_max_threads(), openblas_get_corename(),
               a.cfg.batch_size, a.cfg.image_size, a.cfg.ch, a.cfg.dropout,
               tr.model->num_parameters, env.world_size, env.launcher,
               dist->ops.allreduce_mean_start ? "true" : "false", a.cfg.bucket_mb, a.iters,
               t.step.p10, t.step.p50, t.step.p90, t.step.p50, t.enqueue_ms,
               a.cfg.batch_size / t.step.p50 * 1e3, flops_per_image / 1e9, gflops);
        if (peak > 0)
            printf(", \"sgemm_peak_gflops\": %.1f, \"peak_fraction\": %.3f", peak, gflops / peak);
        if (a.profile_steps) print_profile(&tr, a.profile_steps);
        printf("}\n");
    }
    trainer_free(&tr);
    dist_finalize(dist);
    return 0;
}
