/* libFuzzer target: the checkpoint reader (config, progress, all four weight buffers,
 * extras) over a tiny fixed model. With FUZZ_WRITE_SEED=<path> in the environment it
 * writes a checkpoint of that model's weights there and exits (how the seed was made). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "checkpoint.h"
#include "fuzz_input.h"
#include "unet.h"

static Net *model;
static float *buffers[CKPT_BUFFERS];
static float step_counts[4];

static Config tiny_model_config(void) {
    Config c;
    char err[512];
    config_defaults(&c);
    const char *settings[] = {"image_size=4", "ch=4", "ch_mult=[1]", "num_res_blocks=1",
                              "attn_resolutions=[]", "groups=2", "timesteps=4"};
    for (size_t i = 0; i < sizeof settings / sizeof *settings; i++)
        if (config_set(&c, settings[i], err, sizeof err) != 0) {
            fprintf(stderr, "%s\n", err);
            abort();
        }
    return c;
}

static void write_seed(const char *path, const Config *c) {
    TrainProgress progress = {.step = 3, .adam_steps = 3, .data_index = 48, .world_size = 1};
    CheckpointExtra extra = {"step_counts", ST_F32, 1, {4}, step_counts};
    float *weights_only[CKPT_BUFFERS] = {buffers[CKPT_WEIGHTS]};   /* keeps the seed small */
    char err[512];
    int rc = checkpoint_write(path, model, c, weights_only, &progress, &extra, 1, err, sizeof err);
    if (rc != 0) fprintf(stderr, "%s\n", err);
    exit(rc ? 1 : 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    Config c = tiny_model_config();
    model = unet_build(backend_cpu(), &c, 1, 0);
    for (int b = 0; b < CKPT_BUFFERS; b++)
        buffers[b] = backend_cpu()->alloc(model->num_parameters * sizeof(float));
    if (getenv("FUZZ_WRITE_SEED")) write_seed(getenv("FUZZ_WRITE_SEED"), &c);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_path(data, size);
    char err[512];
    Config c;
    config_defaults(&c);
    if (checkpoint_read_config(path, &c, err, sizeof err) == 0)
        config_validate(&c, err, sizeof err);
    TrainProgress progress;
    checkpoint_read(path, model, buffers, &progress, err, sizeof err);
    CheckpointExtra extra = {"step_counts", ST_F32, 1, {4}, step_counts};
    checkpoint_read_extras(path, &extra, 1, err, sizeof err);
    return 0;
}
