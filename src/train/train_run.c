/* `ddpm train`: sets up a run directory, trains with progress and CSV logging,
 * writes sample grids and checkpoints, and stops cleanly on SIGINT/SIGTERM with
 * a checkpoint of the last completed step.
 *
 * Under a launcher (dist.h) every rank trains its share of each batch; rank 0 alone
 * logs, samples and writes checkpoints. A signal on any rank reaches all of them
 * through the next step's statistics, so they stop after the same step. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "dist.h"
#include "guidance.h"
#include "image_io.h"
#include "sample.h"
#include "train.h"
#include "util.h"

static volatile sig_atomic_t stop_requested;

static void request_stop(int sig) { stop_requested = sig; }

/* A model that cannot fit gets a clear error before the allocation that would fail (or, with
 * overcommit, succeed and be killed later). Host memory bounds the CPU backend only. */
static void check_memory(const Config *c, const Backend *be) {
    if (be != backend_cpu()) return;
    double have = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    double need = config_min_memory_bytes(c);
    if (have > 0 && need > have)
        die("config: keys 'ch', 'ch_mult', 'image_size' and 'batch_size' give a model that needs "
            "at least %.1f GiB, more than the %.1f GiB of memory here", need / (1 << 30),
            have / (1 << 30));
}

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
    if (c->num_class_embeds > 0 &&
        dataset_check_classes(data, c->data_path, config_num_classes(c), err, sizeof err) != 0)
        die("%s", err);
}

/* One run per out_dir: a second run would interleave checkpoints and log rows with this
 * one. flock is released by the kernel however the process ends, kill -9 included. */
static void lock_run_dir(const char *dir) {
    char path[1024], pid[32];
    snprintf(path, sizeof path, "%s/.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) die("%s: cannot open the lock file: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ssize_t got = pread(fd, pid, sizeof pid - 1, 0);
        pid[got > 0 ? got : 0] = 0;
        die("%s: another run is using out_dir %s (lock held by pid %s); give this run its own "
            "out_dir", path, dir, got > 0 ? pid : "?");
    }
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        warn("%s: cannot record the pid", path);
    /* fd stays open until exit: closing it would release the lock. */
}

/* Creates out_dir, takes its lock and clears what a killed run left behind. */
static void open_run_dir(const Config *c) {
    char err[1024];
    if (make_dirs(c->out_dir, err, sizeof err) != 0) die("%s", err);
    lock_run_dir(c->out_dir);
    int removed = checkpoint_remove_partial(c->out_dir);
    if (removed)
        fprintf(stderr, "removed %d partial checkpoint file(s) in %s\n", removed, c->out_dir);
}

/* config.json is written only once the run is known to start (a failed resume keeps the
 * old one); so is classes.json (label -> class folder) for folder datasets. */
static void write_run_config(const Config *c, const Dataset *data) {
    char err[1024], path[1024];
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
    const Config *c = &tr->cfg;
    Objective *o = tr->objective;
    int n = c->sample_n;
    if (n == 0 || !o->ops->sample || tr->data.values) return;   /* latents need a decoder */
    size_t D = (size_t)c->image_size * c->image_size * c->in_channels;
    float *images = xmalloc((size_t)n * D * sizeof(float));
    uint8_t *pixels = xmalloc((size_t)n * D);
    sampler_cancel = &stop_requested;
    o->ops->sample(o, tr->model, tr->ema, n, c->seed, images);
    sampler_cancel = NULL;
    images_to_u8(pixels, images, (size_t)n * D);
    char path[1024], err[1024];
    snprintf(path, sizeof path, "%s/%s", c->out_dir, name);
    if (stop_requested)
        fprintf(stderr, "%s not written: a signal came while sampling\n", path);
    else if (write_png_grid(path, pixels, n, c->image_size, c->image_size, c->in_channels, err,
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
    for (int i = 0; i < batch && r->t; i++) {
        int q = (int)((long)r->t[i] * 4 / timesteps);
        iv->quartile_loss[q] += r->loss_per_sample[i];
        iv->quartile_count[q]++;
    }
}

/* Keeps the header and the rows of steps up to `step`: rows a killed run logged after its
 * last checkpoint are logged again by the resumed run, and would otherwise repeat. */
static void trim_log(const char *path, long step) {
    size_t size;
    char err[1024];
    unsigned char *text = read_file(path, &size, err, sizeof err);
    if (!text) return;   /* no log yet */
    char *kept = xmalloc(size + 1), *out = kept;
    for (char *line = (char *)text, *next; *line; line = next) {
        next = strchr(line, '\n');
        next = next ? next + 1 : line + strlen(line);
        char *end;
        long row_step = strtol(line, &end, 10);
        int is_row = end != line && *end == ',';
        if (next[-1] == '\n' && (!is_row || row_step <= step)) {   /* drops a torn last line */
            memcpy(out, line, (size_t)(next - line));
            out += next - line;
        }
    }
    if ((size_t)(out - kept) != size &&
        write_file_atomic(path, kept, (size_t)(out - kept), err, sizeof err) != 0)
        die("%s", err);
    free(kept);
    free(text);
}

static const char *aux_column(const Objective *o) {
    return o->ops->aux_column ? o->ops->aux_column : "aux";
}

static FILE *open_log(const Config *c, const Objective *o, long step) {
    char path[1024];
    snprintf(path, sizeof path, "%s/log.csv", c->out_dir);
    trim_log(path, step);
    FILE *f = fopen(path, "a");
    if (!f) die("%s: cannot open for writing: %s", path, strerror(errno));
    if (ftell(f) == 0)
        fprintf(f, "step,loss,grad_norm,lr,img_per_s,skipped,loss_q0,loss_q1,loss_q2,loss_q3,"
                   "%s\n", aux_column(o));
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
    char vb_text[64] = "", format[48];
    const char *aux_format = tr->objective->ops->aux_format;
    snprintf(format, sizeof format, " | %s", aux_format ? aux_format : "aux %.4f");
    if (isfinite(iv->vb)) snprintf(vb_text, sizeof vb_text, format, iv->vb / taken);
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

/* A checkpoint of another model or diffusion process must not be resumed: its weights
 * would be read under the wrong config (dropped attention, another schedule). Dies. */
static void check_model_config(const Trainer *tr, const char *path) {
    Config saved;
    char err[1024], why[1024];
    config_defaults(&saved);
    if (checkpoint_read_config(path, &saved, err, sizeof err) != 0) return;   /* load reports */
    if (config_model_mismatch(&saved, &tr->cfg, why, sizeof why) != 0)
        die("%s: cannot resume: %s (resume with the checkpoint's model config, or use a new "
            "out_dir)", path, why);
}

/* Tries one checkpoint; rank 0 sets an unreadable one aside, with a warning (the other ranks
 * read the same files and skip it too). */
static int try_resume(Trainer *tr, const char *path) {
    char err[1024], aside[1100];
    check_model_config(tr, path);
    if (trainer_load(tr, path, err, sizeof err) == 0) return 0;
    if (tr->rank != 0) return -1;
    if (checkpoint_set_aside(path, aside, sizeof aside) == 0)
        warn("%s; moved it to %s", err, aside);
    else
        die("%s; and it cannot be moved aside: %s", err, strerror(errno));
    return -1;
}

/* Resumes from the newest checkpoint that loads, and says which. */
static void resume_if_asked(Trainer *tr, int resume) {
    if (!resume) return;
    long *steps;
    int count = checkpoint_steps(tr->cfg.out_dir, &steps);
    char path[1024];
    int loaded = -1;
    for (int i = count - 1; i >= 0 && loaded < 0; i--) {
        checkpoint_path(path, sizeof path, tr->cfg.out_dir, steps[i]);
        if (try_resume(tr, path) == 0) loaded = i;
    }
    free(steps);
    if (count == 0)
        fprintf(stderr, "no checkpoint in %s: starting from step 0\n", tr->cfg.out_dir);
    else if (loaded < 0)
        die("%s: none of its %d checkpoint(s) loads (see the warnings above)", tr->cfg.out_dir,
            count);
    else
        fprintf(stderr, "resumed from %s at step %ld%s\n", path, tr->progress.step,
                loaded < count - 1 ? " (the newest checkpoint that loads)" : "");
}

static int at_interval(long step, int every) { return every > 0 && step % every == 0; }

static void announce(const Trainer *tr, const Config *cfg, const Backend *be) {
    fprintf(stderr, "training %s on %s: %zu parameters, %d images, batch %d, %d steps, backend %s\n",
            config_enum_name("dataset", cfg->dataset), cfg->data_path, tr->model->num_parameters,
            tr->data.count,
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

/* A checkpoint that cannot be written (a full disk): the previous one is intact either way;
 * on_save_error decides whether the run stops or trains on without it. */
static int save_failed(const Config *cfg) {
    if (cfg->on_save_error == SAVE_ERROR_CONTINUE) {
        warn("training on without this checkpoint (on_save_error=continue)");
        return 0;
    }
    fprintf(stderr, "ddpm: stopping: the checkpoint could not be written (on_save_error=stop; "
                    "the previous checkpoint in %s is intact)\n", cfg->out_dir);
    return 1;
}

/* Rank 0: the run directory, the resume and the log, in an order where a failed resume
 * changes nothing in out_dir. */
static FILE *start_run(Trainer *tr, const Config *cfg, const Backend *be, int resume) {
    const int lead = tr->rank == 0;
    if (lead) open_run_dir(cfg);
    resume_if_asked(tr, resume);
    if (!lead) return NULL;
    write_run_config(cfg, &tr->data);
    checkpoint_prune(cfg->out_dir, cfg->keep_ckpts);   /* a kill before the last prune */
    announce(tr, cfg, be);
    return open_log(cfg, tr->objective, tr->progress.step);
}

static int alone_and_stopped(const Trainer *tr) { return tr->world_size == 1 && stop_requested; }

int train_main(const Config *cfg, const Backend *be, int resume) {
    /* Handlers first: a signal during set-up must stop the run cleanly, not kill it. */
    signal(SIGINT, request_stop);
    signal(SIGTERM, request_stop);
    check_memory(cfg, be);
    Dist *dist = dist_start(be, cfg->dist_timeout);
    const int lead = dist->env.rank == 0;
    Dataset data;
    load_dataset(cfg, &data);
    Trainer tr;
    trainer_init(&tr, be, cfg, &data, dist);
    FILE *log = start_run(&tr, cfg, be, resume);
    Interval iv = {.started = now_seconds()};
    int status = 0, agreed_stop = 0;
    long saved_step = -1;
    /* One process needs no agreement: it stops after the step (or grid) the signal came in. */
    while (tr.progress.step < cfg->steps && !agreed_stop) {
        if (alone_and_stopped(&tr)) {   /* came during the grid or the save after a step */
            agreed_stop = 1;
            break;
        }
        tr.stop_requested = stop_requested != 0;
        StepResult r = trainer_step(&tr);
        agreed_stop = r.stop || alone_and_stopped(&tr);
        interval_add(&iv, &r, cfg->batch_size, cfg->timesteps);
        if (after_step(&tr, &r, log, &iv, &saved_step) != 0 && save_failed(cfg)) {
            status = 1;
            if (tr.world_size == 1) break;
            stop_requested = SIGTERM;   /* the other ranks stop with it, after the next step */
        }
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
    if (status == 0 && lead) {
        if (agreed_stop) fprintf(stderr, "stopping at step %ld on a signal\n", tr.progress.step);
        if (tr.progress.step != saved_step && save_checkpoint(&tr) != 0) status = 1;
        if (!agreed_stop) write_samples(&tr, "samples.png");
    }
    trainer_free(&tr);
    dist_finalize(dist);
    return status;
}
