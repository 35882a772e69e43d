/* Small shared helpers: fatal errors, checked allocation and file I/O. */
#ifndef DDPM_UTIL_H
#define DDPM_UTIL_H

#include <stddef.h>
#include <stdio.h>

/* Prints "ddpm: <message>" to stderr and exits with status 1. */
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Prints "ddpm: warning: <message>" to stderr. */
void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Fills err with the formatted message and returns -1: `return set_error(err, ...)`. */
int set_error(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void *xmalloc(size_t bytes);          /* dies on failure */
/* How many xmalloc/xcalloc calls so far: a step or sampling loop must not add any
 * (src/capture_check.c counts them over a step). */
long host_allocation_count(void);
void *xcalloc(size_t count, size_t size);
char *xstrdup(const char *s);

/* Reads a whole file; sets *size. Returns NULL and fills err (naming the problem) on failure. */
unsigned char *read_file(const char *path, size_t *size, char *err, size_t err_size);
/* Writes data to path atomically: path.tmp, fsync, rename, fsync of the directory.
 * Returns 0, or -1 with err filled. An existing file at path is untouched on failure. */
int write_file_atomic(const char *path, const void *data, size_t size, char *err, size_t err_size);
/* mkdir -p; returns 0 or -1 with err filled. */
int make_dirs(const char *path, char *err, size_t err_size);

/* Command-line numbers: the whole text must parse and lie in range, else die naming flag. */
long parse_long_flag(const char *flag, const char *text, long lo, long hi);
double parse_double_flag(const char *flag, const char *text);
/* Whether a file can be created in dir (made first when create); 0, or -1 with err filled. */
int check_writable_dir(const char *dir, int create, char *err, size_t err_size);

/* OpenMP threads that spin while they wait take the cores from any other process: beside
 * one busy process on 2 cores a training step ran 4.3x slower instead of about 2x. libgomp
 * reads its wait policy once, at load, so this re-executes the program with
 * OMP_WAIT_POLICY=passive unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is already set.
 * Call first thing in main. */
void prefer_passive_omp_wait(char **argv);

double now_seconds(void);             /* monotonic clock */

#endif
