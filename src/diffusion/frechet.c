/* The Frechet distance (frechet.h). */
#include "frechet.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* LAPACK's symmetric eigensolver (Fortran ABI, with the lengths of the two strings). */
void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
            double *w, double *work, const int *lwork, int *info, size_t jobz_len,
            size_t uplo_len);

void gaussian_stats(const float *features, int n, int dim, double *mean, double *cov) {
    memset(mean, 0, (size_t)dim * sizeof(double));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < dim; j++) mean[j] += features[(size_t)i * dim + j];
    for (int j = 0; j < dim; j++) mean[j] /= n;
    double *centred = xmalloc((size_t)n * dim * sizeof(double));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < dim; j++)
            centred[(size_t)i * dim + j] = features[(size_t)i * dim + j] - mean[j];
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dim, dim, n, 1.0 / (n - 1), centred, dim,
                centred, dim, 0.0, cov, dim);
    free(centred);
}

/* a (dim, dim) symmetric -> its eigenvectors (columns, row-major storage of the
 * Fortran result: row i of `a` is eigenvector i) and eigenvalues. Returns LAPACK's info. */
static int symmetric_eigen(double *a, double *values, int dim) {
    int lwork = -1, info = 0;
    double query;
    dsyev_("V", "U", &dim, a, &dim, values, &query, &lwork, &info, 1, 1);
    if (info != 0) return info;
    lwork = (int)query;
    double *work = xmalloc((size_t)lwork * sizeof(double));
    dsyev_("V", "U", &dim, a, &dim, values, work, &lwork, &info, 1, 1);
    free(work);
    return info;
}

/* out = S^(1/2) of the symmetric positive semi-definite s (negative rounding clamped). */
static int symmetric_sqrt(const double *s, double *out, int dim) {
    size_t dd = (size_t)dim * dim;
    double *vectors = xmalloc(dd * sizeof(double)), *values = xmalloc((size_t)dim * sizeof(double));
    double *scaled = xmalloc(dd * sizeof(double));
    memcpy(vectors, s, dd * sizeof(double));
    int info = symmetric_eigen(vectors, values, dim);
    /* the Fortran column j (eigenvector j) is row j of the row-major view */
    for (int j = 0; j < dim; j++) {
        double root = values[j] > 0 ? sqrt(values[j]) : 0.0;
        for (int i = 0; i < dim; i++) scaled[(size_t)j * dim + i] = vectors[(size_t)j * dim + i] * root;
    }
    /* S^(1/2) = V diag(root) V^T = sum_j root_j v_j v_j^T */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dim, dim, dim, 1.0, vectors, dim, scaled,
                dim, 0.0, out, dim);
    free(vectors), free(values), free(scaled);
    return info;
}

double frechet_distance(const double *mean1, const double *cov1, const double *mean2,
                        const double *cov2, int dim) {
    size_t dd = (size_t)dim * dim;
    double *root = xmalloc(dd * sizeof(double)), *tmp = xmalloc(dd * sizeof(double));
    double *product = xmalloc(dd * sizeof(double)), *values = xmalloc((size_t)dim * sizeof(double));
    int info = symmetric_sqrt(cov1, root, dim);
    /* product = S1^(1/2) S2 S1^(1/2), symmetric and positive semi-definite */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, dim, dim, dim, 1.0, root, dim, cov2,
                dim, 0.0, tmp, dim);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, dim, dim, dim, 1.0, tmp, dim, root, dim,
                0.0, product, dim);
    for (int i = 0; i < dim; i++)   /* symmetrise the rounding before the solver reads "U" */
        for (int j = 0; j < i; j++) {
            double m = 0.5 * (product[(size_t)i * dim + j] + product[(size_t)j * dim + i]);
            product[(size_t)i * dim + j] = product[(size_t)j * dim + i] = m;
        }
    if (info == 0) info = symmetric_eigen(product, values, dim);
    double distance = 0, trace_root = 0;
    for (int i = 0; i < dim; i++) {
        double diff = mean1[i] - mean2[i];
        distance += diff * diff + cov1[(size_t)i * dim + i] + cov2[(size_t)i * dim + i];
        trace_root += values[i] > 0 ? sqrt(values[i]) : 0.0;
    }
    free(root), free(tmp), free(product), free(values);
    return info == 0 ? distance - 2 * trace_root : -1.0;
}

double frechet_distance_of(const float *a, int na, const float *b, int nb, int dim) {
    size_t dd = (size_t)dim * dim;
    double *mean_a = xmalloc((size_t)dim * sizeof(double)), *cov_a = xmalloc(dd * sizeof(double));
    double *mean_b = xmalloc((size_t)dim * sizeof(double)), *cov_b = xmalloc(dd * sizeof(double));
    gaussian_stats(a, na, dim, mean_a, cov_a);
    gaussian_stats(b, nb, dim, mean_b, cov_b);
    double d = frechet_distance(mean_a, cov_a, mean_b, cov_b, dim);
    free(mean_a), free(cov_a), free(mean_b), free(cov_b);
    return d;
}
