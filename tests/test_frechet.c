/* The Frechet distance (frechet.h) against closed forms it does not use:
 *  - commuting covariances Q diag(a) Q^T and Q diag(b) Q^T: d^2 = |dmu|^2 + sum (sqrt a - sqrt b)^2;
 *  - 2 x 2, not commuting: Tr((S1 S2)^(1/2)) = sqrt(Tr(S1 S2) + 2 sqrt(det(S1 S2)));
 *  - a set against itself: 0; the statistics against a direct float64 loop. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "frechet.h"
#include "philox.h"
#include "testing.h"
#include "util.h"

enum { DIM = 12 };

/* A random orthogonal Q (rows), by Gram-Schmidt on Philox normals. */
static void random_orthogonal(double *q, int dim) {
    RngKey key = {9, 1, 0, 0};
    for (int i = 0; i < dim; i++) {
        double *row = q + (size_t)i * dim;
        for (int j = 0; j < dim; j++) row[j] = philox_normal(key, (uint32_t)i, (uint32_t)j);
        for (int k = 0; k < i; k++) {
            double dot = 0;
            for (int j = 0; j < dim; j++) dot += row[j] * q[(size_t)k * dim + j];
            for (int j = 0; j < dim; j++) row[j] -= dot * q[(size_t)k * dim + j];
        }
        double norm = 0;
        for (int j = 0; j < dim; j++) norm += row[j] * row[j];
        for (int j = 0; j < dim; j++) row[j] /= sqrt(norm);
    }
}

/* s = Q^T diag(values) Q */
static void from_eigen(double *s, const double *q, const double *values, int dim) {
    for (int i = 0; i < dim; i++)
        for (int j = 0; j < dim; j++) {
            double sum = 0;
            for (int k = 0; k < dim; k++) sum += q[(size_t)k * dim + i] * values[k] * q[(size_t)k * dim + j];
            s[(size_t)i * dim + j] = sum;
        }
}

static void test_commuting(void) {
    double q[DIM * DIM], s1[DIM * DIM], s2[DIM * DIM], a[DIM], b[DIM], m1[DIM], m2[DIM];
    random_orthogonal(q, DIM);
    double want = 0;
    for (int i = 0; i < DIM; i++) {
        a[i] = 0.1 + i * 0.37, b[i] = 2.5 / (1 + i) + (i == 3 ? 0 : 0.01);
        m1[i] = 0.1 * i, m2[i] = 0.3 - 0.05 * i;
        want += (m1[i] - m2[i]) * (m1[i] - m2[i]) + (sqrt(a[i]) - sqrt(b[i])) * (sqrt(a[i]) - sqrt(b[i]));
    }
    from_eigen(s1, q, a, DIM);
    from_eigen(s2, q, b, DIM);
    double got = frechet_distance(m1, s1, m2, s2, DIM);
    CHECK(fabs(got - want) <= 1e-9 * want, "commuting covariances: %.12g, closed form %.12g", got, want);
    double self = frechet_distance(m1, s1, m1, s1, DIM);
    CHECK(fabs(self) <= 1e-9, "a Gaussian against itself: %.3g, not 0", self);
}

static void test_two_by_two(void) {
    const double s1[4] = {2.0, 0.7, 0.7, 0.5}, s2[4] = {0.3, -0.2, -0.2, 1.4};
    const double m1[2] = {1, -1}, m2[2] = {0.5, 0.25};
    double p00 = s1[0] * s2[0] + s1[1] * s2[2], p11 = s1[2] * s2[1] + s1[3] * s2[3];
    double det = (s1[0] * s1[3] - s1[1] * s1[2]) * (s2[0] * s2[3] - s2[1] * s2[2]);
    double trace_root = sqrt(p00 + p11 + 2 * sqrt(det));
    double want = 0.25 + 1.5625 + s1[0] + s1[3] + s2[0] + s2[3] - 2 * trace_root;
    double got = frechet_distance(m1, s1, m2, s2, 2);
    CHECK(fabs(got - want) <= 1e-12, "2x2: %.15g, closed form %.15g", got, want);
}

static void test_sets(void) {
    enum { N = 300, D = 5 };
    float *x = xmalloc(N * D * sizeof(float)), *y = xmalloc(N * D * sizeof(float));
    RngKey key = {3, 2, 0, 0};
    for (int i = 0; i < N * D; i++) {
        x[i] = philox_normal(key, 0, (uint32_t)i);
        y[i] = 1.5f * philox_normal(key, 1, (uint32_t)i) + 0.5f;
    }
    double mean[D], cov[D * D];
    gaussian_stats(x, N, D, mean, cov);
    double worst = 0;
    for (int j = 0; j < D; j++) {
        double m = 0;
        for (int i = 0; i < N; i++) m += x[i * D + j];
        m /= N;
        worst = fmax(worst, fabs(m - mean[j]));
        for (int k = 0; k < D; k++) {
            double mk = 0, c = 0;
            for (int i = 0; i < N; i++) mk += x[i * D + k];
            mk /= N;
            for (int i = 0; i < N; i++) c += (x[i * D + j] - m) * (x[i * D + k] - mk);
            worst = fmax(worst, fabs(c / (N - 1) - cov[j * D + k]));
        }
    }
    CHECK(worst <= 1e-12, "mean and unbiased covariance off by %.3g", worst);
    CHECK(fabs(frechet_distance_of(x, N, x, N, D)) <= 1e-9, "a set against itself is not 0");
    /* N(0, I) against N(0.5, 2.25 I): d^2 = 5 (0.25 + (1 - 1.5)^2) = 2.5, up to sampling */
    double d = frechet_distance_of(x, N, y, N, D);
    CHECK(d > 1.8 && d < 3.4, "N(0,I) vs N(0.5, 2.25 I) in 5 dims: %.3f, expected about 2.5", d);
    free(x), free(y);
}

int main(void) {
    test_commuting();
    test_two_by_two();
    test_sets();
    return test_summary("frechet");
}
