/* The capture check (capture_check.h): a backend table that forwards to another and, inside
 * a region, counts the calls a CUDA graph capture would reject. Only the ops that are
 * forbidden get a wrapper; every other entry is the inner backend's own function. */
#include "capture_check.h"

#include <stdio.h>
#include <string.h>

#include "util.h"

static const Backend *inner;
static Backend checked;
static int capturing;
static CaptureReport report;
static long allocations_at_begin;

static void forbidden(const char *op) {
    if (!capturing) return;
    if (report.forbidden_calls++ == 0)
        snprintf(report.first_forbidden, sizeof report.first_forbidden, "%s", op);
    fprintf(stderr, "capture check: %s inside a captured region\n", op);
}

static void *checked_alloc(size_t bytes) {
    forbidden("alloc");
    return inner->alloc(bytes);
}
static void checked_release(void *p) {
    forbidden("release");
    inner->release(p);
}
static void checked_to_host(void *dst, const void *src, size_t bytes) {
    forbidden("to_host");
    inner->to_host(dst, src, bytes);
}
static void checked_synchronize(void) {
    forbidden("synchronize");
    inner->synchronize();
}
static void *checked_alloc_host(size_t bytes) {
    forbidden("alloc_host");
    return inner->alloc_host(bytes);
}
static void checked_release_host(void *p) {
    forbidden("release_host");
    inner->release_host(p);
}
static void checked_wait_host_copies(void) {
    forbidden("wait_host_copies");
    inner->wait_host_copies();
}
static void checked_conv2d_prepare(ConvShape *s) {
    forbidden("conv2d_prepare");
    inner->conv2d_prepare(s);
}

const Backend *capture_check_backend(const Backend *wrapped) {
    if (inner && inner != wrapped) die("capture check: already wrapping backend %s", inner->name);
    inner = wrapped;
    checked = *wrapped;
    checked.name = "capture-check";
    checked.alloc = checked_alloc;
    checked.release = checked_release;
    checked.to_host = checked_to_host;
    checked.synchronize = checked_synchronize;
    checked.alloc_host = checked_alloc_host;
    checked.release_host = checked_release_host;
    checked.wait_host_copies = checked_wait_host_copies;
    checked.conv2d_prepare = checked_conv2d_prepare;
    return &checked;
}

void capture_check_begin(void) {
    if (capturing) die("capture check: capture_check_begin inside an open region");
    memset(&report, 0, sizeof report);
    allocations_at_begin = host_allocation_count();
    capturing = 1;
}

CaptureReport capture_check_end(void) {
    if (!capturing) die("capture check: capture_check_end without capture_check_begin");
    capturing = 0;
    report.host_allocations = host_allocation_count() - allocations_at_begin;
    return report;
}
