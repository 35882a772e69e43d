/* Checkpoints: safetensors files holding the weights under diffusers names in
 * PyTorch layout, the EMA weights ("ema." prefix), the AdamW moments ("adam_m.",
 * "adam_v."), and in the metadata the config, the step, the optimizer step count
 * and the data position: everything a resumed run needs to continue bit-identically. */
#ifndef DDPM_CHECKPOINT_H
#define DDPM_CHECKPOINT_H

#include <stddef.h>

#include "config.h"
#include "safetensors.h"
#include "graph.h"

typedef struct {
    long step;            /* training steps taken, skipped ones included */
    long adam_steps;      /* optimizer updates applied (bias correction) */
    long skipped_steps;   /* steps skipped for non-finite loss or gradients */
    long data_epoch, data_index;   /* position of the next batch in the data order */
    int world_size;
} TrainProgress;

enum { CKPT_WEIGHTS = 0, CKPT_EMA, CKPT_ADAM_M, CKPT_ADAM_V, CKPT_BUFFERS };

/* Other training state saved beside the weights (host memory). */
typedef struct {
    const char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[2];
    void *data;
} CheckpointExtra;

/* bufs[i]: backend buffers of m->num_parameters floats; NULL entries are skipped. */
int checkpoint_write(const char *path, const Net *m, const Config *cfg,
                     float *const bufs[CKPT_BUFFERS], const TrainProgress *progress,
                     const CheckpointExtra *extras, int n_extras, char *err, size_t err_size);
/* Fills extras present in the file (which must match in dtype and shape); returns the
 * number found, or -1 with err filled. */
int checkpoint_read_extras(const char *path, CheckpointExtra *extras, int n_extras, char *err,
                           size_t err_size);
/* Loads the buffers whose bufs[i] is non-NULL, checking every shape against m.
 * A file without "ema." tensors (e.g. exported weights) loads its plain weights
 * into an EMA request. progress may be NULL. */
int checkpoint_read(const char *path, const Net *m, float *const bufs[CKPT_BUFFERS],
                    TrainProgress *progress, char *err, size_t err_size);
/* Reads the config stored in a checkpoint over cfg. */
int checkpoint_read_config(const char *path, Config *cfg, char *err, size_t err_size);
/* Steps of the files named like checkpoints in dir, ascending; returns the count, *steps
 * malloc'ed (NULL when none). */
int checkpoint_steps(const char *dir, long **steps);
/* Path of the checkpoint with the highest step in dir; returns 0, or -1 if none. */
int checkpoint_find_latest(const char *dir, char *path, size_t path_size);
/* The file name used for a step: "<dir>/ckpt_<step, 8 digits>.safetensors". */
void checkpoint_path(char *path, size_t path_size, const char *dir, long step);
/* Deletes all but the newest `keep` checkpoints in dir. */
void checkpoint_prune(const char *dir, int keep);
/* Deletes the temporary files of writes that never finished (a killed run's
 * ckpt_*.tmp); returns how many. */
int checkpoint_remove_partial(const char *dir);
/* Renames an unreadable checkpoint to "<path>.unreadable", out of the checkpoint names, so
 * it is neither resumed from nor counted by pruning; returns rename's result. */
int checkpoint_set_aside(const char *path, char *aside, size_t aside_size);

#endif
