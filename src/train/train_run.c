/* `ddpm train`: sets up a run directory, trains with progress and CSV logging,
 * writes sample grids and checkpoints, and stops cleanly on SIGINT/SIGTERM with
 * a checkpoint of the last completed step.
 *
 * Under a launcher (dist.h) every rank trains its share of each batch; rank 0 alone
 * logs, samples and writes checkpoints. A signal on any rank reaches all of them
 * through the next step's statistics, so they stop after the same step. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "image_io.h"
#include "sample.h"
#include "train.h"
#include "util.h"

static volatile sig_atomic_t stop_requested;

static void request_stop(int sig) { stop_requested = sig; }

static void load_dataset(const Config *c, Dataset *data) {
    char err[1024];
    if (dataset_load_configured(data, c, c->data_path, 0, c->data_limit, err, sizeof err) != 0)
        die("%s", err);
    if (data->skipped > 0)
        warn("%s: skipped %d files that do not decode (skip_bad_images)", c->data_path,
             data->skipped);
    if (data->height != c->image_size || data->width != c->image_size ||
        data->channels != c->in_channels)
        die("%s: images are %dx%dx%d, the config wants %dx%dx%d (image_size, in_channels)",
            c->data_path, data->height, data->width, data->channels, c->image_size,
            c->image_size, c->in_channels);
}

/* The run's config.json, and classes.json (label -> class folder) for folder datasets. */
static void prepare_run_dir(const Config *c, const Dataset *data) {
    char err[1024], path[1024];
    if (make_dirs(c->out_dir, err, sizeof err) != 0) die("%s", err);
    snprintf(path, sizeof path, "%s/classes.json", c->out_dir);
    if (data->class_names && dataset_write_classes(data, path, err, sizeof err) != 0)
        die("%s", err);
    char *json = config_to_json(c);
    snprintf(path, sizeof path, "%s/config.json", c->out_dir);
    if (write_file_atomic(path, json, strlen(json), err, sizeof err) != 0) die("%s", err);
    free(json);
}

/* Sample grid from the EMA weights, in eval mode; training state is untouched. */
static void write_samples(Trainer *tr, const char *name) {
    UNet *m = tr->model;
    const Config *c = &tr->cfg;
    int n = c->sample_n;
    if (n == 0) return;
    size_t D = unet_sample_size(m);
    float *images = xmalloc((size_t)n * D * sizeof(float));
    uint8_t *pixels = xmalloc((size_t)n * D);
    float *weights = m->weights;
    m->weights = tr->ema;
    sample_images_default(m, &tr->diffusion, c->learn_sigma, n, c->seed, c->clip_denoised, images);
    m->weights = weights;
    images_to_u8(pixels, images, (size_t)n * D);
    char path[1024], err[1024];
    snprintf(path, sizeof path, "%s/%s", c->out_dir, name);
    if (write_png_grid(path, pixels, n, c->image_size, c->image_size, c->in_channels, err,
                       sizeof err) != 0)
        warn("%s", err);
    else
        fprintf(stderr, "wrote %s\n", path);
    free(images);
    free(pixels);
}

static int save_checkpoint(Trainer *tr) {
    char path[1024], err[1024];
    checkpoint_path(path, sizeof path, tr->cfg.out_dir, tr->progress.step);
    if (trainer_save(tr, path, err, sizeof err) != 0) {
        warn("checkpoint not written: %s", err);
        return -1;
    }
    checkpoint_prune(tr->cfg.out_dir, tr->cfg.keep_ckpts);
    fprintf(stderr, "saved %s\n", path);
    return 0;
}

/* Per-interval sums for the progress line and the CSV row. */
typedef struct {
    double loss, grad_norm, vb;
    int steps;
    double quartile_loss[4];
    int quartile_count[4];
    double started;
} Interval;

static void interval_add(Interval *iv, const StepResult *r, int batch, int timesteps) {
    if (r->skipped) return;
    iv->loss += r->loss;
    iv->vb += r->vb;
    iv->grad_norm += r->grad_norm;
    iv->steps++;
    for (int i = 0; i < batch; i++) {
        int q = (int)((long)r->t[i] * 4 / timesteps);
        iv->quartile_loss[q] += r->loss_per_sample[i];
        iv->quartile_count[q]++;
    }
}

static FILE *open_log(const Config *c) {
    char path[1024];
    snprintf(path, sizeof path, "%s/log.csv", c->out_dir);
    FILE *f = fopen(path, "a");
    if (!f) die("%s: cannot open for writing", path);
    if (ftell(f) == 0)
        fprintf(f, "step,loss,grad_norm,lr,img_per_s,skipped,loss_q0,loss_q1,loss_q2,loss_q3,"
                   "vb_bpd\n");
    return f;
}

static void format_duration(char *out, size_t size, double seconds) {
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(out, size, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else snprintf(out, size, "%ldm%02lds", s / 60, s % 60);
}

static void log_interval(FILE *log, Trainer *tr, Interval *iv, double lr) {
    const Config *c = &tr->cfg;
    long step = tr->progress.step;
    double elapsed = now_seconds() - iv->started;
    int taken = iv->steps ? iv->steps : 1;
    double img_per_s = (double)c->log_every * c->batch_size / (elapsed > 0 ? elapsed : 1e-9);
    double eta = (double)(c->steps - step) * c->batch_size / img_per_s;
    char eta_text[32];
    format_duration(eta_text, sizeof eta_text, eta);
    char vb_text[48] = "";
    if (isfinite(iv->vb)) snprintf(vb_text, sizeof vb_text, " | L_t %.4f bits/dim", iv->vb / taken);
    fprintf(stderr, "step %ld/%d | loss %.5f%s | grad %.3f | lr %.2e | %.1f img/s | ETA %s%s\n",
            step, c->steps, iv->loss / taken, vb_text, iv->grad_norm / taken, lr, img_per_s,
            eta_text, tr->progress.skipped_steps ? " | skipped steps!" : "");
    fprintf(log, "%ld,%.9g,%.9g,%.9g,%.2f,%ld", step, iv->loss / taken, iv->grad_norm / taken,
            lr, img_per_s, tr->progress.skipped_steps);
    for (int q = 0; q < 4; q++)
        fprintf(log, ",%.9g", iv->quartile_count[q] ? iv->quartile_loss[q] / iv->quartile_count[q]
                                                    : NAN);
    fprintf(log, ",%.9g\n", iv->vb / taken);
    fflush(log);
    *iv = (Interval){.started = now_seconds()};
}

static void resume_if_asked(Trainer *tr, int resume) {
    char path[1024], err[1024];
    if (!resume) return;
    if (checkpoint_find_latest(tr->cfg.out_dir, path, sizeof path) != 0) {
        fprintf(stderr, "no checkpoint in %s: starting from step 0\n", tr->cfg.out_dir);
        return;
    }
    if (trainer_load(tr, path, err, sizeof err) != 0) die("%s", err);
    fprintf(stderr, "resumed from %s at step %ld\n", path, tr->progress.step);
}

static int at_interval(long step, int every) { return every > 0 && step % every == 0; }

static void announce(const Trainer *tr, const Config *cfg, const Backend *be) {
    fprintf(stderr, "training %s on %s: %zu parameters, %d images, batch %d, %d steps, backend %s\n",
            cfg->dataset, cfg->data_path, tr->model->num_parameters, tr->data.count,
            cfg->batch_size, cfg->steps, be->name);
    if (tr->world_size > 1 || tr->dist->ops.allreduce_mean_start)
        fprintf(stderr, "data parallel: %d ranks (%s) x %d samples per step\n", tr->world_size,
                tr->dist->env.launcher, tr->local_batch);
}

/* After each step: the log line, samples and checkpoints, on rank 0 only. */
static int after_step(Trainer *tr, const StepResult *r, FILE *log, Interval *iv,
                      long *saved_step) {
    const Config *cfg = &tr->cfg;
    long step = tr->progress.step;
    if (tr->rank != 0) return 0;
    if (r->skipped)
        warn("step %ld: non-finite loss (%g) or gradient norm (%g); update skipped", step,
             r->loss, r->grad_norm);
    if (at_interval(step, cfg->log_every)) log_interval(log, tr, iv, r->lr);
    if (at_interval(step, cfg->sample_every)) {
        char name[64];
        snprintf(name, sizeof name, "samples_%08ld.png", step);
        write_samples(tr, name);
    }
    /* no checkpoints while steps are being skipped: the last one stays the last good one */
    if (at_interval(step, cfg->ckpt_every) && tr->bad_streak == 0) {
        *saved_step = step;
        return save_checkpoint(tr);
    }
    return 0;
}

int train_main(const Config *cfg, const Backend *be, int resume) {
    Dist *dist = dist_start(be, cfg->dist_timeout);
    const int lead = dist->env.rank == 0;
    Dataset data;
    load_dataset(cfg, &data);
    if (lead) prepare_run_dir(cfg, &data);
    Trainer tr;
    trainer_init(&tr, be, cfg, &data, dist);
    resume_if_asked(&tr, resume);
    if (lead) announce(&tr, cfg, be);
    signal(SIGINT, request_stop);
    signal(SIGTERM, request_stop);
    FILE *log = lead ? open_log(cfg) : NULL;
    Interval iv = {.started = now_seconds()};
    int status = 0, agreed_stop = 0;
    long saved_step = -1;
    while (tr.progress.step < cfg->steps && !agreed_stop) {
        tr.stop_requested = stop_requested != 0;
        StepResult r = trainer_step(&tr);
        agreed_stop = r.stop;
        interval_add(&iv, &r, cfg->batch_size, cfg->timesteps);
        if (after_step(&tr, &r, log, &iv, &saved_step) != 0) status = 1;
        if (tr.bad_streak >= cfg->max_bad_steps) {
            if (lead)
                fprintf(stderr, "ddpm: %d consecutive non-finite steps (at step %ld): stopping; "
                        "the last checkpoint in %s is kept\n", tr.bad_streak, tr.progress.step,
                        cfg->out_dir);
            status = 3;
            break;
        }
    }
    if (log) fclose(log);
    if (status != 3 && lead) {
        if (agreed_stop) fprintf(stderr, "stopping at step %ld on a signal\n", tr.progress.step);
        if (tr.progress.step != saved_step && save_checkpoint(&tr) != 0) status = 1;
        if (!agreed_stop) write_samples(&tr, "samples.png");
    }
    trainer_free(&tr);
    dist_finalize(dist);
    return status;
}
