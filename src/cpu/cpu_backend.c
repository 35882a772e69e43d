/* The CPU backend table, generated from BACKEND_OPS: host memory, and the reference ops
 * of cpu_backend.h. */
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#ifdef DDPM_ONEDNN
#include "cpu_onednn.h"
#endif
#include "util.h"

void *cpu_alloc(size_t bytes) { return xcalloc(1, bytes); }
void cpu_release(void *p) { free(p); }
static void host_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
}
void cpu_to_device(void *dst, const void *src, size_t bytes) { host_copy(dst, src, bytes); }
void cpu_to_host(void *dst, const void *src, size_t bytes) { host_copy(dst, src, bytes); }
void cpu_copy(void *dst, const void *src, size_t bytes) { host_copy(dst, src, bytes); }
void cpu_fill(float *x, float value, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = value;
}
void cpu_synchronize(void) {}
/* Host memory is already host memory: the asynchronous copy is a plain one, done at once. */
void *cpu_alloc_host(size_t bytes) { return xcalloc(1, bytes); }
void cpu_release_host(void *p) { free(p); }
void cpu_to_host_async(void *dst, const void *src, size_t bytes) { host_copy(dst, src, bytes); }
void cpu_wait_host_copies(void) {}
/* Nothing to capture: the CPU runs each op as it is called. */
void *cpu_graph_begin(void) { return NULL; }
void *cpu_graph_end(void) { die("internal: graph_end on the CPU backend, which never captures"); }
void cpu_graph_launch(void *graph) {
    (void)graph;
    die("internal: graph_launch on the CPU backend, which never captures");
}
void cpu_graph_release(void *graph) { (void)graph; }

void *cpu_scratch(CpuScratch *s, size_t bytes) {
    if (bytes > s->bytes) {
        free(s->data);
        s->data = xmalloc(bytes);
        s->bytes = bytes;
    }
    return s->data;
}

int cpu_env_choice(const char *var, const char *const names[2], int second_built) {
    const char *want = getenv(var);
    if (!want || !*want) return second_built ? 1 : 0;
    if (strcmp(want, names[0]) == 0) return 0;
    if (strcmp(want, names[1]) != 0) die("%s=%s: expected %s or %s", var, want, names[0], names[1]);
    if (!second_built)
        die("%s=%s: this build has no oneDNN (install libdnnl-dev and rebuild)", var, want);
    return 1;
}

#ifdef DDPM_ONEDNN
static dnnl_engine_t engine;
static dnnl_stream_t stream;

static void start_onednn(void) {
    if (engine) return;
    DNNL_CHECK(dnnl_engine_create(&engine, dnnl_cpu, 0));
    DNNL_CHECK(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags));
}

dnnl_engine_t cpu_onednn_engine(void) {
    start_onednn();
    return engine;
}

dnnl_stream_t cpu_onednn_stream(void) {
    start_onednn();
    return stream;
}
#endif

void conv_shape_finish(ConvShape *s) {
    s->oh = (s->h + s->pad_top + s->pad_bottom - s->kh) / s->stride + 1;
    s->ow = (s->w + s->pad_left + s->pad_right - s->kw) / s->stride + 1;
}

#define CPU_TABLE_ENTRY(ret, op, params) .op = cpu_##op,
static const Backend cpu = {
    .name = "cpu",
    BACKEND_OPS(CPU_TABLE_ENTRY)
};
#undef CPU_TABLE_ENTRY

const Backend *backend_cpu(void) { return &cpu; }
