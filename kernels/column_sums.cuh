/* Deterministic column sums on the GPU: every bias gradient (conv, linear, the
 * per-sample time-embedding bias) and GroupNorm's dgamma/dshift.
 *
 * A (batch, rows, cols) view whose elements each supply K values through a Load
 * functor is reduced over rows to K sums per (batch, col), in double. A block of
 * 32 x 8 threads covers 32 adjacent columns (a warp reads one contiguous row
 * segment) and one chunk of rows, which its 8 lanes of threads stride through; the
 * lanes are then added in lane order in shared memory. With one chunk the block
 * hands its sums straight to the Store functor; with several, per-chunk sums go to
 * cuda.scratch and a second kernel adds them in chunk order. The chunking depends
 * on the shape alone, so results are the same on every run and every GPU. No atomics.
 */
#ifndef DDPM_COLUMN_SUMS_CUH
#define DDPM_COLUMN_SUMS_CUH

#include "cuda_common.cuh"

enum {
    COLSUM_COLS = 32,               /* columns per block: one warp */
    COLSUM_LANES = 8,               /* row lanes per block */
    COLSUM_MIN_ROWS_PER_LANE = 16,  /* below this a chunk is not worth a block */
    COLSUM_TARGET_BLOCKS = 1024,    /* enough blocks to fill any current GPU */
};

template <int K>
struct Sums {
    double v[K];
};

template <int K, class Load, class Store>
__global__ void column_sums_kernel(Load load, Store store, double *partials, long long rows,
                                   int cols, long long rows_per_chunk) {
    const int col = blockIdx.x * COLSUM_COLS + threadIdx.x;
    const int chunk = blockIdx.y, chunks = gridDim.y, b = blockIdx.z;
    const long long first = (long long)chunk * rows_per_chunk;
    const long long end = rows < first + rows_per_chunk ? rows : first + rows_per_chunk;
    Sums<K> acc = {};
    if (col < cols)
        for (long long r = first + threadIdx.y; r < end; r += COLSUM_LANES) load(acc, b, r, col);

    __shared__ double lanes[K][COLSUM_LANES][COLSUM_COLS];
    for (int k = 0; k < K; k++) lanes[k][threadIdx.y][threadIdx.x] = acc.v[k];
    __syncthreads();
    if (threadIdx.y != 0 || col >= cols) return;
    Sums<K> total = {};
    for (int lane = 0; lane < COLSUM_LANES; lane++)
        for (int k = 0; k < K; k++) total.v[k] += lanes[k][lane][threadIdx.x];
    if (chunks == 1) {
        store(b, col, total);
        return;
    }
    double *slot = partials + (((size_t)b * chunks + chunk) * cols + col) * K;
    for (int k = 0; k < K; k++) slot[k] = total.v[k];
}

template <int K, class Store>
__global__ void column_partials_kernel(Store store, const double *partials, int batch, int cols,
                                       int chunks) {
    const size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (size_t)batch * cols) return;
    const int b = (int)(index / cols), col = (int)(index % cols);
    Sums<K> total = {};
    for (int chunk = 0; chunk < chunks; chunk++) {
        const double *slot = partials + (((size_t)b * chunks + chunk) * cols + col) * K;
        for (int k = 0; k < K; k++) total.v[k] += slot[k];
    }
    store(b, col, total);
}

/* load(Sums<K> &acc, int b, long long row, int col) adds that element's K values to acc;
 * store(int b, int col, const Sums<K> &sums) receives each column's totals once. */
template <int K, class Load, class Store>
static void column_sums(Load load, Store store, int batch, long long rows, int cols) {
    if (batch <= 0 || cols <= 0) return;
    if (batch > 65535) die("cuda: column sums over a batch of %d (at most 65535)", batch);
    const int col_blocks = (cols + COLSUM_COLS - 1) / COLSUM_COLS;
    long long chunks = COLSUM_TARGET_BLOCKS / ((long long)col_blocks * batch);
    const long long useful = rows / (COLSUM_LANES * COLSUM_MIN_ROWS_PER_LANE);
    const long long fit = (long long)(cuda.scratch_doubles / ((size_t)batch * cols * K));
    if (chunks > useful) chunks = useful;
    if (chunks > fit) chunks = fit;
    if (chunks > 65535) chunks = 65535;
    if (chunks < 1) chunks = 1;
    const long long rows_per_chunk = rows > 0 ? (rows + chunks - 1) / chunks : 1;
    chunks = rows > 0 ? (rows + rows_per_chunk - 1) / rows_per_chunk : 1;   /* none empty */

    const dim3 grid((unsigned)col_blocks, (unsigned)chunks, (unsigned)batch);
    const dim3 block(COLSUM_COLS, COLSUM_LANES);
    column_sums_kernel<K><<<grid, block, 0, cuda.stream>>>(load, store, cuda.scratch, rows, cols,
                                                           rows_per_chunk);
    cudaCheckLaunch();
    if (chunks == 1) return;
    const size_t outputs = (size_t)batch * cols;
    column_partials_kernel<K><<<(unsigned)((outputs + THREADS - 1) / THREADS), THREADS, 0,
                                cuda.stream>>>(store, cuda.scratch, batch, cols, (int)chunks);
    cudaCheckLaunch();
}

/* Elements of a stored (batch, rows, cols) matrix. */
struct MatrixElements {
    const float *m;
    long long rows;
    int cols;
    __device__ void operator()(Sums<1> &acc, int b, long long r, int col) const {
        acc.v[0] += m[((size_t)b * rows + r) * cols + col];
    }
};

/* out (batch, cols) = beta*out + sums */
struct BlendInto {
    float *out;
    float beta;
    int cols;
    __device__ void operator()(int b, int col, const Sums<1> &s) const {
        const size_t i = (size_t)b * cols + col;
        out[i] = blend(out[i], beta, (float)s.v[0]);
    }
};

/* out (batch, cols) = beta*out + the column sums of m (batch, rows, cols). */
static inline void column_sums_into(float *out, float beta, const float *m, int batch,
                                    long long rows, int cols) {
    column_sums<1>(MatrixElements{m, rows, cols}, BlendInto{out, beta, cols}, batch, rows, cols);
}

#endif
