/* The Frechet distance between two feature sets, each summarised as a Gaussian (Heusel
 * et al. 2017, FID's formula, on any features):
 *   d^2 = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)).
 * Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of the symmetric
 * S1^(1/2) S2 S1^(1/2): two symmetric eigensolves (LAPACK's dsyev, from OpenBLAS), where
 * scipy's sqrtm of a non-symmetric product can turn complex. All in double. */
#ifndef DDPM_FRECHET_H
#define DDPM_FRECHET_H

#include <stddef.h>

/* The mean (dim) and the unbiased covariance (dim, dim) of n rows of features (n, dim). */
void gaussian_stats(const float *features, int n, int dim, double *mean, double *cov);

/* d^2 for two Gaussians (means dim, covariances dim x dim, symmetric). Returns it, or a
 * negative value when LAPACK fails. */
double frechet_distance(const double *mean1, const double *cov1, const double *mean2,
                        const double *cov2, int dim);

/* d^2 between the feature sets a (na, dim) and b (nb, dim). */
double frechet_distance_of(const float *a, int na, const float *b, int nb, int dim);

#endif
