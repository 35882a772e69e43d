/* The CUDA backend's convolution plan cache and explicit-padding geometry
 * (kernels/conv_algo_cache.h): plain host code, checked on any machine. */
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

#include "../kernels/conv_algo_cache.h"
#include "testing.h"

static ConvShape shape(int n, int h, int c, int oc, int k, int stride, int pad_lo, int pad_hi) {
    ConvShape s = {.n = n, .h = h, .w = h, .c = c, .oc = oc, .kh = k, .kw = k, .stride = stride,
                   .pad_top = pad_lo, .pad_left = pad_lo, .pad_bottom = pad_hi,
                   .pad_right = pad_hi};
    conv_shape_finish(&s);
    return s;
}

/* What cuDNN computes from the geometry we describe to it must be the convolution the
 * ConvShape asks for: the same output size, and window o starting at the same input
 * row, o*stride - pad_top, in the original image's coordinates. */
static void check_geometry(const char *name, ConvShape s) {
    int cudnn_oh = (conv_input_h(&s) + 2 * conv_cudnn_pad_h(&s) - s.kh) / s.stride + 1;
    int cudnn_ow = (conv_input_w(&s) + 2 * conv_cudnn_pad_w(&s) - s.kw) / s.stride + 1;
    CHECK(cudnn_oh == s.oh && cudnn_ow == s.ow, "%s: cuDNN output %dx%d, expected %dx%d", name,
          cudnn_oh, cudnn_ow, s.oh, s.ow);
    /* explicit padding shifts the image down by pad_top inside the buffer */
    int shift = conv_needs_explicit_padding(&s) ? s.pad_top : 0;
    for (int o = 0; o < s.oh; o++) {
        int cudnn_first = o * s.stride - conv_cudnn_pad_h(&s) - shift;
        int wanted_first = o * s.stride - s.pad_top;
        if (cudnn_first != wanted_first) {
            CHECK(0, "%s: window %d starts at row %d, expected %d", name, o, cudnn_first,
                  wanted_first);
            return;
        }
    }
    CHECK(1, "%s", name);
}

static void test_padding_geometry(void) {
    ConvShape down = shape(4, 32, 64, 64, 3, 2, 0, 1);   /* DDPM downsample */
    CHECK(down.oh == 16 && down.ow == 16, "downsample output %dx%d", down.oh, down.ow);
    CHECK(conv_needs_explicit_padding(&down), "bottom/right-only padding must be explicit");
    CHECK(conv_input_h(&down) == 33 && conv_input_w(&down) == 33, "padded input %dx%d",
          conv_input_h(&down), conv_input_w(&down));
    CHECK(conv_cudnn_pad_h(&down) == 0 && conv_cudnn_pad_w(&down) == 0, "cuDNN pads nothing");
    size_t padded = (size_t)4 * 33 * 33 * 64 * sizeof(float);
    CHECK(conv_padded_input_bytes(&down) >= padded &&
              conv_padded_input_bytes(&down) < padded + CONV_WORKSPACE_ALIGN &&
              conv_padded_input_bytes(&down) % CONV_WORKSPACE_ALIGN == 0,
          "padded input bytes %zu for %zu", conv_padded_input_bytes(&down), padded);
    check_geometry("downsample 32", down);
    check_geometry("downsample 16", shape(2, 16, 8, 8, 3, 2, 0, 1));
    check_geometry("downsample odd 15", shape(2, 15, 8, 8, 3, 2, 0, 1));
    check_geometry("top-heavy padding", shape(2, 9, 4, 4, 3, 1, 2, 0));

    ConvShape same = shape(4, 32, 64, 128, 3, 1, 1, 1);
    CHECK(!conv_needs_explicit_padding(&same), "symmetric padding stays with cuDNN");
    CHECK(conv_input_h(&same) == 32 && conv_cudnn_pad_h(&same) == 1, "symmetric geometry");
    CHECK(conv_padded_input_bytes(&same) == 0, "no padded buffer for symmetric padding");
    check_geometry("3x3 same", same);
    check_geometry("1x1", shape(4, 32, 64, 32, 1, 1, 0, 0));
    check_geometry("strided symmetric", shape(2, 17, 4, 4, 3, 2, 1, 1));
}

static void test_workspace_size(void) {
    ConvAlgoEntry e = {.algo_bytes = {100, 5000, 300}};
    ConvShape same = shape(2, 8, 4, 4, 3, 1, 1, 1);
    CHECK(conv_entry_workspace_bytes(&e, &same) == 5000, "max of the three directions: %zu",
          conv_entry_workspace_bytes(&e, &same));
    ConvShape down = shape(2, 8, 4, 4, 3, 2, 0, 1);
    size_t pad = conv_padded_input_bytes(&down);
    CHECK(pad == conv_align((size_t)2 * 9 * 9 * 4 * sizeof(float)), "padded share %zu", pad);
    CHECK(conv_entry_workspace_bytes(&e, &down) == pad + 5000, "padded input + max: %zu",
          conv_entry_workspace_bytes(&e, &down));
    ConvAlgoEntry none = {.algo_bytes = {0, 0, 0}};
    CHECK(conv_entry_workspace_bytes(&none, &same) == 0, "no workspace at all");
    CHECK(conv_align(0) == 0 && conv_align(1) == 256 && conv_align(256) == 256 &&
              conv_align(257) == 512,
          "alignment to 256 bytes");
}

static void test_lookup(void) {
    ConvAlgoCache *cache = calloc(1, sizeof *cache);
    ConvShape s = shape(128, 32, 128, 128, 3, 1, 1, 1);
    CHECK(conv_algo_cache_find(cache, &s) == NULL, "empty cache finds nothing");
    ConvAlgoEntry *e = conv_algo_cache_add(cache, &s);
    CHECK(e && cache->count == 1, "added");
    e->algo[CONV_FORWARD] = 1;
    e->algo[CONV_BACKWARD_DATA] = 1;
    e->algo[CONV_BACKWARD_FILTER] = 3;
    CHECK(conv_algo_cache_find(cache, &s) == e, "found by the same shape");

    ConvShape noise = s;   /* what conv2d_prepare writes is not part of the key */
    noise.workspace_bytes = 12345;
    noise.algo[0] = 7;
    CHECK(conv_algo_cache_find(cache, &noise) == e, "workspace and algo are not in the key");

    const size_t fields[] = {
        offsetof(ConvShape, n),       offsetof(ConvShape, h),        offsetof(ConvShape, w),
        offsetof(ConvShape, c),       offsetof(ConvShape, oc),       offsetof(ConvShape, kh),
        offsetof(ConvShape, kw),      offsetof(ConvShape, stride),   offsetof(ConvShape, pad_top),
        offsetof(ConvShape, pad_left), offsetof(ConvShape, pad_bottom),
        offsetof(ConvShape, pad_right)};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        ConvShape other = s;
        *(int *)((char *)&other + fields[i]) += 1;
        CHECK(conv_algo_cache_find(cache, &other) == NULL, "key field %zu distinguishes", i);
    }

    /* a smaller batch at run time derives from the prepared entry with its algorithms */
    ConvShape run = s;
    run.n = 16;
    for (int d = 0; d < 3; d++) run.algo[d] = e->algo[d];
    CHECK(conv_algo_cache_find(cache, &run) == NULL, "no entry of its own yet");
    CHECK(conv_algo_cache_find_prepared(cache, &run) == e, "the prepared entry is found");
    run.algo[CONV_BACKWARD_FILTER] = 0;
    CHECK(conv_algo_cache_find_prepared(cache, &run) == NULL, "other algorithms: no parent");
    run.algo[CONV_BACKWARD_FILTER] = 3;
    ConvShape other_geometry = run;
    other_geometry.oc = 64;
    CHECK(conv_algo_cache_find_prepared(cache, &other_geometry) == NULL,
          "other geometry: no parent");

    ConvShape big = s;
    big.n = 256;
    ConvAlgoEntry *e_big = conv_algo_cache_add(cache, &big);
    for (int d = 0; d < 3; d++) e_big->algo[d] = e->algo[d];
    CHECK(conv_algo_cache_find_prepared(cache, &run) == e_big, "the largest prepared batch");
    CHECK(conv_algo_cache_find(cache, &s) == e && conv_algo_cache_find(cache, &big) == e_big,
          "both batches keep their entries");

    for (int i = cache->count; i < CONV_ALGO_CACHE_CAPACITY; i++) {
        ConvShape filler = s;
        filler.oc = 1000 + i;
        if (!conv_algo_cache_add(cache, &filler)) break;
    }
    CHECK(cache->count == CONV_ALGO_CACHE_CAPACITY, "filled to %d", cache->count);
    ConvShape one_more = s;
    one_more.oc = 7;
    CHECK(conv_algo_cache_add(cache, &one_more) == NULL, "a full cache refuses");
    CHECK(conv_algo_cache_find(cache, &big) == e_big, "entries survive filling up");
    free(cache);
}

/* The choices file: a line round-trips, bad lines are skipped, the first line of a
 * key wins, appends accumulate, and a missing file reads as -1. */
static void test_choices_file(void) {
    ConvAlgoEntry e = {.algo = {1, 0, 3}, .math = {3, 3, 3}, .algo_bytes = {99, 98, 97}};
    ConvShape down = shape(128, 32, 128, 128, 3, 2, 0, 1);
    e.key = conv_key(&down);
    char line[256];
    conv_algo_line_format(line, sizeof line, &e);
    ConvAlgoEntry back;
    CHECK(conv_algo_line_parse(line, &back), "a formatted line parses: %s", line);
    CHECK(memcmp(&back.key, &e.key, sizeof e.key) == 0 &&
              memcmp(back.algo, e.algo, sizeof e.algo) == 0 &&
              memcmp(back.math, e.math, sizeof e.math) == 0 && back.algo_bytes[0] == 0,
          "round trip (workspace sizes are not kept)");
    CHECK(!conv_algo_line_parse("1 2 3\n", &back), "a short line is rejected");
    CHECK(!conv_algo_line_parse("1 2 3 4 5 6 7 8 9 10 11 12 1 1 1 3 3 3 junk\n", &back),
          "trailing junk is rejected");

    char path[] = "/tmp/test_conv_algo_cache_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "temporary file");
    if (fd < 0) return;
    close(fd);
    ConvAlgoEntry other = e;
    other.key.n = 16;
    other.algo[2] = 1;
    ConvAlgoEntry duplicate = e;
    duplicate.algo[0] = 6;
    CHECK(conv_algo_cache_append(path, &e) == 0 && conv_algo_cache_append(path, &other) == 0 &&
              conv_algo_cache_append(path, &duplicate) == 0,
          "appends");
    FILE *f = fopen(path, "a");
    fputs("not a line of ours\n", f);
    fclose(f);
    ConvAlgoCache *cache = calloc(1, sizeof *cache);
    CHECK(conv_algo_cache_load(cache, path) == 2, "two distinct keys load (%d)", cache->count);
    ConvAlgoEntry *found = conv_algo_cache_find(cache, &down);
    CHECK(found && found->algo[0] == 1, "the first line of a key wins");
    down.n = 16;
    found = conv_algo_cache_find(cache, &down);
    CHECK(found && found->algo[2] == 1, "the other batch has its own choice");
    unlink(path);
    CHECK(conv_algo_cache_load(cache, path) == -1, "a missing file reads as -1");
    free(cache);
}

int main(void) {
    test_padding_geometry();
    test_workspace_size();
    test_lookup();
    test_choices_file();
    return test_summary("conv_algo_cache");
}
