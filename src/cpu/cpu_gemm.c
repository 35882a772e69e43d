/* The CPU backend's GEMMs: C = alpha op(A) op(B) + beta C, row-major, batched with strides,
 * on oneDNN's matmul in builds with oneDNN, else on OpenBLAS's SGEMM.
 *
 * Why oneDNN: it JIT-compiles its GEMM kernels for the vector ISA the CPU has, while
 * OpenBLAS runs the kernels of the core type it detected or was told: where
 * OPENBLAS_CORETYPE=Haswell is set (some environments set it, since older OpenBLAS builds
 * compute wrong results on newer processors), an AVX-512 CPU runs OpenBLAS's AVX2 kernels
 * at half its SGEMM rate. The linear layers and attention are about a fifth of a training
 * step. DDPM_CPU_GEMM=openblas|onednn picks one for a run (read at the first GEMM); the
 * tests compare the two.
 *
 * One oneDNN primitive per distinct 2-D problem (shape, transposes, leading dimensions,
 * alpha, beta), made the first time it runs and kept, with its scratchpad: a one-time host
 * allocation like cpu_scratch's. alpha is an output scale, beta != 0 a sum post-op. A batch
 * runs as its 2-D problems one after another: oneDNN 2.6's batched matmul over attention's
 * strided views corrupted the heap in about one training run in twenty (docs/RELIABILITY.md).
 * The primitives run on the calling thread's OpenMP team; they are not called from inside a
 * parallel region. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_gemm.h"
#include "util.h"

#include "cpu_backend.h"
#ifdef DDPM_ONEDNN
#include "cpu_onednn.h"
#endif

static int path_chosen;
static CpuGemmPath path;

const char *cpu_gemm_path_name(CpuGemmPath p) { return p == GEMM_PATH_ONEDNN ? "onednn" : "openblas"; }

int cpu_gemm_set_path(CpuGemmPath p) {
#ifndef DDPM_ONEDNN
    if (p == GEMM_PATH_ONEDNN) return -1;
#endif
    path = p;
    path_chosen = 1;
    return 0;
}

CpuGemmPath cpu_gemm_path(void) {
    static const char *const names[2] = {"openblas", "onednn"};
#ifdef DDPM_ONEDNN
    const int built = 1;
#else
    const int built = 0;
#endif
    if (!path_chosen) cpu_gemm_set_path((CpuGemmPath)cpu_env_choice("DDPM_CPU_GEMM", names, built));
    return path;
}

static void openblas_gemm(const GemmCall *g, const float *a, const float *b, float *c) {
    for (int i = 0; i < g->batch; i++)
        cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans,
                    g->trans_b ? CblasTrans : CblasNoTrans, g->m, g->n, g->k, g->alpha,
                    a + i * g->stride_a, g->lda, b + i * g->stride_b, g->ldb, g->beta,
                    c + i * g->stride_c, g->ldc);
}

#ifdef DDPM_ONEDNN


typedef struct GemmEntry {
    GemmCall key;
    dnnl_primitive_t prim;   /* NULL: oneDNN has no kernel for it, OpenBLAS runs it */
    dnnl_memory_t a, b, c, scratch;
    void *scratch_data;
    struct GemmEntry *next;
} GemmEntry;

static GemmEntry *entries;

/* The (rows, cols) view, or (batch, rows, cols) for batch > 1, of a row-major operand
 * stored with leading dimension ld (transposed: the stored matrix is cols x rows) and batch
 * stride. One problem is described in 2-D: a 3-D one with a batch stride of 0 sends oneDNN
 * to its reference kernel. */
static dnnl_memory_desc_t view(int batch, int rows, int cols, int ld, size_t stride, int trans) {
    dnnl_memory_desc_t md;
    const dnnl_dim_t row_stride = trans ? 1 : ld, col_stride = trans ? ld : 1;
    if (batch == 1) {
        dnnl_dims_t dims = {rows, cols}, strides = {row_stride, col_stride};
        DNNL_CHECK(dnnl_memory_desc_init_by_strides(&md, 2, dims, dnnl_f32, strides));
        return md;
    }
    dnnl_dims_t dims = {batch, rows, cols}, strides = {(dnnl_dim_t)stride, row_stride, col_stride};
    DNNL_CHECK(dnnl_memory_desc_init_by_strides(&md, 3, dims, dnnl_f32, strides));
    return md;
}

static GemmEntry *make_entry(const GemmCall *g) {
    dnnl_engine_t engine = cpu_onednn_engine();
    GemmEntry *e = xcalloc(1, sizeof *e);
    e->key = *g;
    dnnl_memory_desc_t a = view(g->batch, g->m, g->k, g->lda, g->stride_a, g->trans_a);
    dnnl_memory_desc_t b = view(g->batch, g->k, g->n, g->ldb, g->stride_b, g->trans_b);
    dnnl_memory_desc_t c = view(g->batch, g->m, g->n, g->ldc, g->stride_c, 0);
    dnnl_matmul_desc_t desc;
    DNNL_CHECK(dnnl_matmul_desc_init(&desc, &a, &b, NULL, &c));
    dnnl_primitive_attr_t attr;
    DNNL_CHECK(dnnl_primitive_attr_create(&attr));
    DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    if (g->alpha != 1.0f) DNNL_CHECK(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &g->alpha));
    dnnl_post_ops_t post_ops = NULL;
    if (g->beta != 0.0f) {
        DNNL_CHECK(dnnl_post_ops_create(&post_ops));
        DNNL_CHECK(dnnl_post_ops_append_sum(post_ops, g->beta));
        DNNL_CHECK(dnnl_primitive_attr_set_post_ops(attr, post_ops));
    }
    dnnl_primitive_desc_t pd;
    dnnl_status_t status = dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL);
    if (post_ops) DNNL_CHECK(dnnl_post_ops_destroy(post_ops));
    DNNL_CHECK(dnnl_primitive_attr_destroy(attr));
    e->next = entries;
    entries = e;
    if (status == dnnl_unimplemented) return e;   /* no kernel for these strides: OpenBLAS */
    DNNL_CHECK(status);
    const dnnl_memory_desc_t *scratch = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t scratch_bytes = scratch ? dnnl_memory_desc_get_size(scratch) : 0;
    e->scratch_data = xmalloc(scratch_bytes ? scratch_bytes : 64);
    DNNL_CHECK(dnnl_memory_create(&e->scratch, scratch, engine, e->scratch_data));
    DNNL_CHECK(dnnl_primitive_create(&e->prim, pd));
    DNNL_CHECK(dnnl_primitive_desc_destroy(pd));
    DNNL_CHECK(dnnl_memory_create(&e->a, &a, engine, DNNL_MEMORY_NONE));
    DNNL_CHECK(dnnl_memory_create(&e->b, &b, engine, DNNL_MEMORY_NONE));
    DNNL_CHECK(dnnl_memory_create(&e->c, &c, engine, DNNL_MEMORY_NONE));
    return e;
}

static int same_call(const GemmCall *x, const GemmCall *y) {
    return x->batch == y->batch && x->m == y->m && x->n == y->n && x->k == y->k &&
           x->trans_a == y->trans_a && x->trans_b == y->trans_b && x->lda == y->lda &&
           x->ldb == y->ldb && x->ldc == y->ldc && x->stride_a == y->stride_a &&
           x->stride_b == y->stride_b && x->stride_c == y->stride_c && x->alpha == y->alpha &&
           x->beta == y->beta;
}

static GemmEntry *entry_for(const GemmCall *g) {
    for (GemmEntry *e = entries; e; e = e->next)
        if (same_call(&e->key, g)) return e;
    return make_entry(g);
}

static void onednn_gemm(const GemmCall *g, const float *a, const float *b, float *c) {
    GemmEntry *e = entry_for(g);
    if (!e->prim) {
        openblas_gemm(g, a, b, c);
        return;
    }
    DNNL_CHECK(dnnl_memory_set_data_handle(e->a, (void *)a));
    DNNL_CHECK(dnnl_memory_set_data_handle(e->b, (void *)b));
    DNNL_CHECK(dnnl_memory_set_data_handle(e->c, c));
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b},
                               {DNNL_ARG_DST, e->c}, {DNNL_ARG_SCRATCHPAD, e->scratch}};
    DNNL_CHECK(dnnl_primitive_execute(e->prim, cpu_onednn_stream(), 4, args));
    DNNL_CHECK(dnnl_stream_wait(cpu_onednn_stream()));
}

#endif

int cpu_gemm_onednn_runs(const GemmCall *call) {
#ifdef DDPM_ONEDNN
    GemmCall g = *call;
    if (g.batch < 1) g.batch = 1;
    return entry_for(&g)->prim != NULL;
#else
    (void)call;
    return 0;
#endif
}

void cpu_gemm(const GemmCall *call, const float *a, const float *b, float *c) {
    GemmCall g = *call;
    if (g.batch < 1) g.batch = 1;
    if (g.m == 0 || g.n == 0) return;
#ifdef DDPM_ONEDNN
    if (cpu_gemm_path() == GEMM_PATH_ONEDNN && g.k > 0) {
        /* a batch as its 2-D problems, one at a time (see the top of the file) */
        GemmCall one = g;
        one.batch = 1;
        one.stride_a = one.stride_b = one.stride_c = 0;
        for (int i = 0; i < g.batch; i++)
            onednn_gemm(&one, a + i * g.stride_a, b + i * g.stride_b, c + i * g.stride_c);
        return;
    }
#endif
    openblas_gemm(&g, a, b, c);
}
