/* `ddpm export`, `ddpm import` (diffusers folders, see diffusers.h) and `ddpm forward`
 * (one U-Net evaluation on given inputs: the reference that other tools compare with). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "diffusers.h"
#include "npy.h"
#include "sample.h"
#include "util.h"

/* The value of --flag, or NULL; every argument must be a known flag with a value. */
static const char *flag_value(int argc, char **argv, const char *flag, const char *const *known,
                              const char *command) {
    const char *value = NULL;
    for (int i = 1; i < argc; i += 2) {   /* flag, value */
        int ok = 0;
        for (const char *const *k = known; *k; k++) ok |= strcmp(argv[i], *k) == 0;
        if (!ok || i + 1 >= argc)
            die("%s: unexpected argument '%s' (see ddpm --help)", command, argv[i]);
        if (strcmp(argv[i], flag) == 0) value = argv[i + 1];
    }
    return value;
}

int export_main(int argc, char **argv) {
    static const char *const known[] = {"--ckpt", "--out", NULL};
    const char *ckpt = flag_value(argc, argv, "--ckpt", known, "export");
    const char *out = flag_value(argc, argv, "--out", known, "export");
    if (!ckpt || !out) die("export: --ckpt FILE and --out DIR are required");
    char err[1024];
    Config cfg;
    config_defaults(&cfg);
    if (checkpoint_read_config(ckpt, &cfg, err, sizeof err) != 0) die("%s", err);
    /* a DDPMPipeline would sample a flow model as a DDPM */
    if (cfg.objective != OBJECTIVE_DDPM && cfg.objective != OBJECTIVE_VAE)
        die("%s: export writes a DDPMPipeline (objective=ddpm) or an AutoencoderKL "
            "(objective=vae), and this checkpoint is objective=%s", ckpt,
            config_enum_name("objective", cfg.objective));
    if (diffusers_export(ckpt, out, err, sizeof err) != 0) die("%s", err);
    fprintf(stderr, "exported %s to %s (%s.from_pretrained)\n", ckpt, out,
            cfg.objective == OBJECTIVE_VAE ? "AutoencoderKL" : "DDPMPipeline");
    return 0;
}

/* ddpm import DIR --out FILE */
int import_main(int argc, char **argv) {
    static const char *const known[] = {"--out", NULL};
    if (argc < 2 || argv[1][0] == '-') die("import: usage: ddpm import DIR --out FILE");
    const char *out = flag_value(argc - 1, argv + 1, "--out", known, "import");
    if (!out) die("import: --out FILE is required");
    char err[1024];
    if (diffusers_import(argv[1], out, err, sizeof err) != 0) die("%s", err);
    fprintf(stderr, "imported %s into %s\n", argv[1], out);
    return 0;
}

/* "3" for every image, or one comma-separated value in [0, T) per image (--t, --class). */
static void parse_per_image(const char *flag, const char *text, int n, int T, int32_t *t) {
    int count = 0;
    for (const char *p = text;; p++) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v >= T || (*end && *end != ',') || count == n)
            die("forward: %s expects 1 or %d integers in [0, %d), got '%s'", flag, n, T, text);
        t[count++] = (int32_t)v;
        if (!*end) break;
        p = end;
    }
    if (count != 1 && count != n)
        die("forward: %s has %d values, the input has %d images", flag, count, n);
    for (int i = count; i < n; i++) t[i] = t[0];
}

/* ddpm forward --ckpt F --x x.npy --t T [--class L] --out y.npy: the EMA model's output,
 * NHWC; --class (a row of class_embedding.weight per image) for class-conditional models. */
int forward_main(int argc, char **argv, const Backend *be) {
    static const char *const known[] = {"--ckpt", "--x", "--t", "--class", "--out", "--device",
                                        NULL};
    const char *class_text = flag_value(argc, argv, "--class", known, "forward");
    const char *ckpt = flag_value(argc, argv, "--ckpt", known, "forward");
    const char *x_path = flag_value(argc, argv, "--x", known, "forward");
    const char *t_text = flag_value(argc, argv, "--t", known, "forward");
    const char *out = flag_value(argc, argv, "--out", known, "forward");
    if (!ckpt || !x_path || !t_text || !out)
        die("forward: --ckpt FILE --x x.npy --t T[,T...] --out y.npy are required");
    char err[1024];
    float *x;
    int64_t shape[8];
    int ndim;
    if (npy_read_f32(x_path, &x, shape, &ndim, err, sizeof err) != 0) die("%s", err);
    Inference inf;
    inference_load(&inf, ckpt, be, ndim == 4 && shape[0] > 0 ? (int)shape[0] : 1);
    const Config *c = &inf.cfg;
    if (ndim != 4 || shape[0] < 1 || shape[1] != c->image_size || shape[2] != c->image_size ||
        shape[3] != c->in_channels)
        die("%s: expected a (N, %d, %d, %d) float32 array (NHWC)", x_path, c->image_size,
            c->image_size, c->in_channels);
    int n = (int)shape[0];
    Net *m = inf.model;
    int32_t *t = xmalloc((size_t)n * sizeof(int32_t));
    float *time = xmalloc((size_t)n * sizeof(float));
    parse_per_image("--t", t_text, n, c->timesteps, t);
    if (c->num_class_embeds > 0) {
        if (!class_text)
            die("forward: --class is required: %s is class-conditional (ids 0 to %d)", ckpt,
                c->num_class_embeds - 1);
        int32_t *ids = xmalloc((size_t)n * sizeof(int32_t));
        parse_per_image("--class", class_text, n, c->num_class_embeds, ids);
        be->to_device(net_input_data(m, "class_labels"), ids, (size_t)n * sizeof(int32_t));
        free(ids);
    } else if (class_text) {
        die("forward: --class: %s is an unconditional model (num_class_embeds = 0)", ckpt);
    }
    for (int i = 0; i < n; i++) time[i] = (float)t[i];
    be->to_device(net_input_data(m, "sample"), x,
                  (size_t)n * net_per_sample(m, net_input(m, "sample")) * sizeof(float));
    be->to_device(net_input_data(m, "timestep"), time, (size_t)n * sizeof(float));
    m->training = 0;
    net_forward(m, n, NULL, (RngKey){0});
    size_t out_count = (size_t)n * net_per_sample(m, net_output(m, "sample"));
    float *y = xmalloc(out_count * sizeof(float));
    be->to_host(y, net_output_data(m, "sample"), out_count * sizeof(float));
    int64_t out_shape[4] = {n, c->image_size, c->image_size, c->out_channels};
    if (npy_write_f32(out, y, out_shape, 4, err, sizeof err) != 0) die("%s", err);
    free(y);
    free(t);
    free(time);
    free(x);
    inference_free(&inf);
    return 0;
}
