/* bin/ddpm: the command line. Dispatches `ddpm train`, `sample`, `invert`, `eval`, `evaluate`,
 * `schedule`, `info` and `backends`; picks the backend and the thread count. */
#include <cblas.h>
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "diffusion.h"
#include "eval.h"
#include "sample.h"
#include "train.h"
#include "models.h"
#include "unet.h"
#include "util.h"

/* openblas_set_num_threads is OpenBLAS's, not CBLAS's: another cblas.h (netlib's, through
 * Debian's alternatives) lacks it. The Makefile puts OpenBLAS's include folder first. */
#ifndef OPENBLAS_VERSION
#error "cblas.h is not OpenBLAS's: install libopenblas-openmp-dev or add its include folder"
#endif

int export_main(int argc, char **argv);                    /* src/cli/interop_cli.c */
int import_main(int argc, char **argv);
int forward_main(int argc, char **argv, const Backend *be);
int evaluate_main(int argc, char **argv, const Backend *be);   /* src/cli/evaluate.c */
int encode_main(int argc, char **argv, const Backend *be);   /* src/cli/vae_cli.c */
int reconstruct_main(int argc, char **argv, const Backend *be);

static void usage(FILE *to) {
    fprintf(to,
            "usage:\n"
            "  ddpm train --config FILE [--resume] [--device cpu|cuda] [key=value ...]\n"
            "  ddpm sample --ckpt FILE [--n N] [--out DIR] [--seed S] [--batch B] [--clip 0|1]\n"
            "              [--sampler ancestral|ddim] [--steps 50|ddim50|10,10,20] [--eta E]\n"
            "              [--noise x_T.npy] [--save-noise x_T.npy] [--vae FILE]\n"
            "  ddpm encode --vae FILE --out LATENTS [--mode mean|sample]  (data set -> latents)\n"
            "  ddpm reconstruct --vae FILE [--data PATH] [--out DIR]  (autoencoder MSE, PSNR, grid)\n"
            "  ddpm invert --ckpt FILE --images x0.npy --out x_T.npy [--steps SPEC]  (DDIM inversion)\n"
            "  ddpm eval --ckpt FILE --data PATH [--n N] [--mc K] [--csv FILE]  (bound in bits/dim)\n"
            "  ddpm evaluate --classifier CKPT --samples F.npz [--data PATH] [--n N]\n"
            "                (class accuracy and Frechet distance of samples, with its floor)\n"
            "  ddpm export --ckpt FILE --out DIR     (diffusers DDPMPipeline folder, EMA weights)\n"
            "  ddpm import DIR --out FILE            (diffusers folder -> checkpoint at step 0)\n"
            "  ddpm forward --ckpt FILE --x x.npy --t T[,T...] [--class L[,L...]] --out y.npy\n"
            "                                                (one U-Net pass, NHWC)\n"
            "  ddpm schedule --config FILE [key=value ...]   (CSV of every per-timestep array)\n"
            "  ddpm info --config FILE [key=value ...]       (parameter names and shapes)\n"
            "  ddpm backends                                 (the backends usable here)\n"
            "Configs are JSON files of known keys (see configs/); key=value overrides them.\n");
}

/* --device: cuda when built with it and a GPU is present, else the CPU. */
static const Backend *pick_backend(const char *device) {
    const Backend *cuda = backend_cuda();
    if (!device || strcmp(device, "auto") == 0) return cuda ? cuda : backend_cpu();
    if (strcmp(device, "cpu") == 0) return backend_cpu();
    if (strcmp(device, "cuda") == 0) {
        if (!cuda) die("--device cuda: this build has no CUDA backend, or no GPU is visible");
        return cuda;
    }
    die("--device: expected cpu, cuda or auto, got '%s'", device);
}

typedef struct {
    Config cfg;
    int resume;
    const char *device;
} ConfigArgs;

/* --config FILE, flags, then key=value overrides in order; the result is validated. */
static ConfigArgs parse_config_args(int argc, char **argv) {
    ConfigArgs a = {.resume = 0};
    char err[1024];
    const char *config_path = NULL;
    config_defaults(&a.cfg);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) config_path = argv[++i];
        else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) a.device = argv[++i];
        else if (strcmp(argv[i], "--resume") == 0) a.resume = 1;
        else if (strchr(argv[i], '=') && argv[i][0] != '-') continue;
        else die("unknown argument '%s' (see ddpm --help)", argv[i]);
    }
    if (!config_path) die("--config FILE is required");
    if (config_load_file(&a.cfg, config_path, err, sizeof err) != 0) die("%s", err);
    for (int i = 1; i < argc; i++)
        if (strchr(argv[i], '=') && argv[i][0] != '-' && strcmp(argv[i - 1], "--config") &&
            strcmp(argv[i - 1], "--device") && config_set(&a.cfg, argv[i], err, sizeof err) != 0)
            die("%s", err);
    if (config_validate(&a.cfg, err, sizeof err) != 0) die("%s: %s", config_path, err);
    return a;
}

static void set_threads(int threads) {
    if (threads <= 0) return;
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
}

static int schedule_main(int argc, char **argv) {
    ConfigArgs a = parse_config_args(argc, argv);
    GaussianDiffusion d;
    char err[512];
    if (diffusion_from_config(&d, &a.cfg, err, sizeof err) != 0) die("%s", err);
    int count;
    const char *const *names = diffusion_array_names(&count);
    printf("t");
    for (int i = 0; i < count; i++) printf(",%s", names[i]);
    printf("\n");
    for (int t = 0; t < d.num_timesteps; t++) {
        printf("%d", t);
        for (int i = 0; i < count; i++) printf(",%.17g", diffusion_array(&d, i)[t]);
        printf("\n");
    }
    diffusion_free(&d);
    return 0;
}

static int info_main(int argc, char **argv) {
    ConfigArgs a = parse_config_args(argc, argv);
    Net *m = model_build(backend_cpu(), &a.cfg, 1, 0);
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->params[i];
        printf("%-60s [", p->name);
        for (int j = 0; j < p->ndim; j++) printf("%s%lld", j ? ", " : "", (long long)p->shape[j]);
        printf("]\n");
    }
    printf("parameters: %zu\n", m->num_parameters);
    net_free(m);
    return 0;
}

static const char *find_flag(int argc, char **argv, const char *flag) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], flag) == 0) return argv[i + 1];
    return NULL;
}

/* `ddpm COMMAND --help` or `-h`; sample, invert and eval print their own fuller usage. */
static int asks_help(int argc, char **argv) {
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return 1;
    return 0;
}

static int has_own_usage(const char *command) {
    return strcmp(command, "sample") == 0 || strcmp(command, "invert") == 0 ||
           strcmp(command, "eval") == 0 || strcmp(command, "evaluate") == 0 ||
           strcmp(command, "encode") == 0 || strcmp(command, "reconstruct") == 0;
}

int main(int argc, char **argv) {
    prefer_passive_omp_wait(argv);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *command = argv[1];
    if (asks_help(argc, argv) && !has_own_usage(command)) {
        usage(stdout);
        return 0;
    }
    if (strcmp(command, "train") == 0) {
        ConfigArgs a = parse_config_args(argc - 1, argv + 1);
        set_threads(a.cfg.threads);
        return train_main(&a.cfg, pick_backend(a.device), a.resume);
    }
    if (strcmp(command, "sample") == 0)
        return sample_main(argc - 1, argv + 1, pick_backend(find_flag(argc, argv, "--device")));
    if (strcmp(command, "eval") == 0)
        return eval_main(argc - 1, argv + 1, pick_backend(find_flag(argc, argv, "--device")));
    if (strcmp(command, "evaluate") == 0)
        return evaluate_main(argc - 1, argv + 1, pick_backend(find_flag(argc, argv, "--device")));
    if (strcmp(command, "invert") == 0)
        return invert_main(argc - 1, argv + 1, pick_backend(find_flag(argc, argv, "--device")));
    if (strcmp(command, "encode") == 0)
        return encode_main(argc - 1, argv + 1, pick_backend(find_flag(argc, argv, "--device")));
    if (strcmp(command, "reconstruct") == 0)
        return reconstruct_main(argc - 1, argv + 1, pick_backend(find_flag(argc, argv, "--device")));
    if (strcmp(command, "export") == 0) return export_main(argc - 1, argv + 1);
    if (strcmp(command, "import") == 0) return import_main(argc - 1, argv + 1);
    if (strcmp(command, "forward") == 0)
        return forward_main(argc - 1, argv + 1, pick_backend(find_flag(argc, argv, "--device")));
    if (strcmp(command, "schedule") == 0) return schedule_main(argc - 1, argv + 1);
    if (strcmp(command, "info") == 0) return info_main(argc - 1, argv + 1);
    if (strcmp(command, "backends") == 0) {
        printf("cpu\n%s", backend_cuda() ? "cuda\n" : "");
        return 0;
    }
    usage(stderr);
    die("unknown command '%s'", command);
}
