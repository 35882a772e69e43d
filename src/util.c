/* Fatal errors, checked allocation, whole-file and atomic file I/O. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("ddpm: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

int set_error(char *err, size_t err_size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return -1;
}

void warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("ddpm: warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static long host_allocations;   /* every xmalloc and xcalloc, from any thread */

long host_allocation_count(void) { return __atomic_load_n(&host_allocations, __ATOMIC_RELAXED); }

void *xmalloc(size_t bytes) {
    __atomic_add_fetch(&host_allocations, 1, __ATOMIC_RELAXED);
    void *p = malloc(bytes ? bytes : 1);
    if (!p) die("out of memory allocating %zu bytes", bytes);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    __atomic_add_fetch(&host_allocations, 1, __ATOMIC_RELAXED);
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) die("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

unsigned char *read_file(const char *path, size_t *size, char *err, size_t err_size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_size, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, err_size, "%s: not a regular file", path);
        fclose(f);
        return NULL;
    }
    unsigned char *data = xmalloc((size_t)st.st_size + 1);
    size_t got = fread(data, 1, (size_t)st.st_size, f);
    fclose(f);
    if (got != (size_t)st.st_size) {
        snprintf(err, err_size, "%s: read %zu of %lld bytes", path, got, (long long)st.st_size);
        free(data);
        return NULL;
    }
    data[got] = 0;
    *size = got;
    return data;
}

static int fsync_parent_dir(const char *path) {
    char *copy = xstrdup(path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    free(copy);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int write_file_atomic(const char *path, const void *data, size_t size, char *err, size_t err_size) {
    size_t len = strlen(path) + 16;
    char *tmp = xmalloc(len);
    snprintf(tmp, len, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        snprintf(err, err_size, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    const char *p = data;
    size_t left = size;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            snprintf(err, err_size, "%s: write failed: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            free(tmp);
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        snprintf(err, err_size, "%s: fsync failed: %s", tmp, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, err_size, "%s: rename to %s failed: %s", tmp, path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    /* Without the directory's fsync a power loss can undo the rename: the log would
     * report a checkpoint the disk does not hold. */
    if (fsync_parent_dir(path) != 0) {
        snprintf(err, err_size, "%s: written, but syncing its directory failed: %s", path,
                 strerror(errno));
        return -1;
    }
    return 0;
}

int make_dirs(const char *path, char *err, size_t err_size) {
    char *copy = xstrdup(path);
    for (char *p = copy + 1;; p++) {
        if (*p != '/' && *p != 0) continue;
        char saved = *p;
        *p = 0;
        int created = mkdir(copy, 0755) == 0;
        if (!created && errno != EEXIST) {
            snprintf(err, err_size, "%s: cannot create directory: %s", copy, strerror(errno));
            free(copy);
            return -1;
        }
        /* A new directory's entry is durable only once its parent is synced. */
        if (created && fsync_parent_dir(copy) != 0) {
            snprintf(err, err_size, "%s: created, but syncing its parent failed: %s", copy,
                     strerror(errno));
            free(copy);
            return -1;
        }
        *p = saved;
        if (saved == 0) break;
    }
    free(copy);
    return 0;
}

long parse_long_flag(const char *flag, const char *text, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (*text == 0 || *end != 0 || errno == ERANGE || v < lo || v > hi)
        die("%s: expected an integer in [%ld, %ld], got '%s'", flag, lo, hi, text);
    return v;
}

double parse_double_flag(const char *flag, const char *text) {
    char *end;
    double v = strtod(text, &end);
    if (*text == 0 || *end != 0 || !isfinite(v)) die("%s: expected a number, got '%s'", flag, text);
    return v;
}

int check_writable_dir(const char *dir, int create, char *err, size_t err_size) {
    if (create && make_dirs(dir, err, err_size) != 0) return -1;
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/.write_probe.%ld", dir, (long)getpid());
    int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) {
        snprintf(err, err_size, "%s: cannot write there: %s", dir, strerror(errno));
        return -1;
    }
    close(fd);
    unlink(probe);
    return 0;
}

void prefer_passive_omp_wait(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;   /* the user's choice */
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);
    /* No /proc: run on with the default policy rather than fail. */
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
