/* Data parallelism without a network:
 * - rank discovery from each launcher's environment, and its errors;
 * - the gradient buckets: during one U-Net backward, with a recording transport in
 *   place of MPI/NCCL, the buckets cover every gradient once, top down, and each is
 *   started only once its gradients are final (its contents at the start equal the
 *   gradients after backward), most of them before backward ends (the overlap). */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "cpu_backend.h"
#include "dist.h"
#include "testing.h"
#include "unet.h"
#include "util.h"

static const char *LAUNCH_VARS[] = {
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
    "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID",
    "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID",
};

static void clear_launch_env(void) {
    for (size_t i = 0; i < sizeof LAUNCH_VARS / sizeof LAUNCH_VARS[0]; i++)
        unsetenv(LAUNCH_VARS[i]);
}

/* "NAME=value NAME=value" into the environment, after clearing every launcher variable. */
static void set_env(const char *assignments) {
    clear_launch_env();
    char *copy = xstrdup(assignments), *save = NULL;
    for (char *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        *eq = '\0';
        setenv(tok, eq + 1, 1);
    }
    free(copy);
}

static void check_detect(const char *assignments, const char *launcher, int rank, int world,
                         int local_rank) {
    DistEnv env;
    char err[256] = "";
    set_env(assignments);
    int rc = dist_env_detect(&env, err, sizeof err);
    CHECK(rc == 0 && strcmp(env.launcher, launcher) == 0 && env.rank == rank &&
              env.world_size == world && env.local_rank == local_rank,
          "%s: got rc %d (%s), %s rank %d of %d local %d; expected %s %d of %d local %d",
          assignments, rc, err, env.launcher, env.rank, env.world_size, env.local_rank, launcher,
          rank, world, local_rank);
}

static void check_rejected(const char *assignments, const char *phrase) {
    DistEnv env;
    char err[256] = "";
    set_env(assignments);
    CHECK(dist_env_detect(&env, err, sizeof err) != 0 && strstr(err, phrase),
          "%s: expected an error with '%s', got '%s'", assignments, phrase, err);
}

static void test_env_detection(void) {
    check_detect("", "none", 0, 1, 0);
    check_detect("RANK=3 WORLD_SIZE=8 LOCAL_RANK=3 MASTER_ADDR=node0 MASTER_PORT=29500",
                 "torchrun", 3, 8, 3);
    check_detect("OMPI_COMM_WORLD_RANK=5 OMPI_COMM_WORLD_SIZE=16 OMPI_COMM_WORLD_LOCAL_RANK=1",
                 "Open MPI", 5, 16, 1);
    check_detect("PMI_RANK=2 PMI_SIZE=4 MPI_LOCALRANKID=2", "MPICH", 2, 4, 2);
    check_detect("SLURM_PROCID=9 SLURM_STEP_NUM_TASKS=16 SLURM_LOCALID=1 SLURM_NTASKS=16",
                 "Slurm", 9, 16, 1);
    /* inside an sbatch script, without srun: one process, not a world of SLURM_NTASKS */
    check_detect("SLURM_PROCID=0 SLURM_NTASKS=16", "none", 0, 1, 0);
    /* srun starting an MPI program: the MPI variables come first */
    check_detect("PMI_RANK=1 PMI_SIZE=2 SLURM_PROCID=1 SLURM_STEP_NUM_TASKS=2", "MPICH", 1, 2, 0);
    DistEnv env;
    char err[256];
    set_env("RANK=0 WORLD_SIZE=2 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500");
    CHECK(dist_env_detect(&env, err, sizeof err) == 0 && strcmp(env.master_addr, "10.0.0.1") == 0 &&
              env.master_port == 29500, "MASTER_ADDR and MASTER_PORT are read");
    check_rejected("RANK=2 WORLD_SIZE=2", "RANK=2 is not below WORLD_SIZE=2");
    check_rejected("RANK=x WORLD_SIZE=2", "RANK=\"x\" is not a rank or a size");
    check_rejected("OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_SIZE=0", "is not below");
    check_rejected("RANK=0 WORLD_SIZE=2 MASTER_PORT=70000", "MASTER_PORT=70000 is not a TCP port");
    clear_launch_env();
}

/* ---- a recording transport in place of MPI/NCCL ---- */

typedef struct {
    size_t lo[256], n[256];
    float *snapshot[256];     /* the bucket's contents when it was started */
    int started, started_during_backward;
    int backward_done;
} Recorder;

static Recorder recorder;

static void record_start(Dist *d, float *buf, size_t n) {
    Recorder *r = &recorder;
    if (r->started == 256) die("too many buckets");
    r->lo[r->started] = (size_t)(buf - d->grads);
    r->n[r->started] = n;
    r->snapshot[r->started] = xmalloc(n * sizeof(float));
    memcpy(r->snapshot[r->started], buf, n * sizeof(float));
    r->started_during_backward += !r->backward_done;
    r->started++;
}

static void record_wait(Dist *d) { (void)d; }

static Config tiny_config(void) {
    Config cfg;
    char err[512];
    config_defaults(&cfg);
    if (config_load_file(&cfg, "configs/tiny", err, sizeof err) != 0) die("%s", err);
    cfg.dropout = 0;
    return cfg;
}

static void fill(float *x, size_t n, uint32_t seed) {
    cpu_normal_fill(x, 1, n, (RngKey){seed, 99, 0, 0});
}

static void test_buckets(void) {
    Config cfg = tiny_config();
    const int B = 2;
    Net *m = unet_build(backend_cpu(), &cfg, B, 0);
    net_init_weights(m, 1, NULL);
    fill(net_input_data(m, "sample"), (size_t)B * net_per_sample(m, net_input(m, "sample")), 2);
    float *t = net_input_data(m, "timestep");
    for (int i = 0; i < B; i++) t[i] = 100 + 400 * i;
    net_forward(m, B, NULL, (RngKey){0, 0, 0, 0});
    fill(net_output_grad(m, "sample"), (size_t)B * net_per_sample(m, net_output(m, "sample")), 3);

    Dist d = {.env = {.world_size = 2, .launcher = "test"}, .control_fd = -1};
    d.ops.allreduce_mean_start = record_start;
    d.ops.allreduce_wait = record_wait;
    const size_t P = m->num_parameters;
    dist_attach_grads(&d, m->grads, P, 0.05);   /* 13107 floats: 14 buckets */
    m->grads_ready = dist_grads_ready;
    m->grads_ready_ctx = &d;
    net_backward(m, B, (RngKey){0, 0, 0, 0});
    recorder.backward_done = 1;
    dist_grads_finish(&d);

    Recorder *r = &recorder;
    size_t expected_buckets = (P + d.bucket_floats - 1) / d.bucket_floats;
    CHECK((size_t)r->started == expected_buckets, "%d buckets for %zu gradients, expected %zu",
          r->started, P, expected_buckets);
    size_t top = P;
    int final = 1;
    for (int i = 0; i < r->started; i++) {
        CHECK(r->lo[i] + r->n[i] == top, "bucket %d ends at %zu, expected %zu", i,
              r->lo[i] + r->n[i], top);
        top = r->lo[i];
        final &= memcmp(r->snapshot[i], m->grads + r->lo[i], r->n[i] * sizeof(float)) == 0;
        free(r->snapshot[i]);
    }
    CHECK(top == 0, "the buckets cover every gradient (lowest start %zu)", top);
    CHECK(final, "every bucket was started after its gradients were final");
    CHECK(r->started_during_backward >= r->started - 2,
          "%d of %d buckets started during backward (the overlap)", r->started_during_backward,
          r->started);
    printf("  %d buckets, %d started during backward\n", r->started, r->started_during_backward);
    net_free(m);
}

int main(void) {
    test_env_detection();
    test_buckets();
    return test_summary("dist");
}
