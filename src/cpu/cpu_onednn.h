/* What the CPU backend's two oneDNN users (cpu_conv_onednn.c, cpu_gemm.c) share: the error
 * check, and one engine and stream for the process. Builds with DDPM_ONEDNN only. */
#ifndef DDPM_CPU_ONEDNN_H
#define DDPM_CPU_ONEDNN_H

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "util.h"

#define DNNL_CHECK(call)                                                                  \
    do {                                                                                  \
        dnnl_status_t status_ = (call);                                                   \
        if (status_ != dnnl_success)                                                      \
            die("oneDNN: %s failed (%s) at %s:%d", #call, dnnl_status2str(status_),       \
                __FILE__, __LINE__);                                                      \
    } while (0)

/* The CPU engine and its stream, made on first use. */
dnnl_engine_t cpu_onednn_engine(void);
dnnl_stream_t cpu_onednn_stream(void);

#endif
