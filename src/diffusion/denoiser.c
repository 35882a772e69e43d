/* A network as a denoiser (see denoiser.h). */
#include "denoiser.h"

#include <stdlib.h>

#include "util.h"

/* A class-conditional network's labels into its "class_labels" input: each must name a
 * row of its class embedding (an out-of-range id would read outside the table). */
static void feed_labels(NetDenoiser *d, int n) {
    const int32_t *labels = d->base.labels;
    if (!labels) die("a class-conditional network needs a class for every sample (none given)");
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= d->class_rows)
            die("class %d of sample %d is outside [0, %d), the rows of the class embedding",
                (int)labels[i], i, d->class_rows);
    d->base.be->to_device(net_input_data(d->net, "class_labels"), labels,
                          (size_t)n * sizeof(int32_t));
}

/* The sampler's x is its own buffer: it is copied into the network's input, so that a
 * wrapper may hand the network a batch the sampler never sees (doubled for guidance). */
static const float *run_network(NetDenoiser *d, const float *x, int n) {
    Net *net = d->net;
    const Backend *be = d->base.be;
    be->copy(net_data(net, net_input(net, "sample")), x,
             (size_t)n * d->base.sample_size * sizeof(float));
    if (d->class_rows) feed_labels(d, n);
    int was_training = net->training;
    net->training = 0;
    net_forward(net, n, d->weights, (RngKey){0});
    net->training = was_training;
    return net_data(net, net_output(net, "sample"));
}

static const float *net_predict(Denoiser *self, const float *x, int n, float t) {
    NetDenoiser *d = (NetDenoiser *)self;
    for (int i = 0; i < n; i++) d->t_host[i] = t;
    self->be->to_device(net_input_data(d->net, "timestep"), d->t_host, (size_t)n * sizeof(float));
    return run_network(d, x, n);
}

static const float *net_predict_at(Denoiser *self, const float *x, int n, const float *times,
                                   const int32_t *step) {
    NetDenoiser *d = (NetDenoiser *)self;
    if (self->predict != net_predict)
        die("internal: a denoiser wrapper kept the network's predict_at (set it to NULL)");
    self->be->fill_indexed(net_input_data(d->net, "timestep"), (size_t)n, times, step);
    return run_network(d, x, n);
}

void net_denoiser_init(NetDenoiser *d, Net *net, const float *weights, ModelOutput output) {
    int x = net_input(net, "sample"), out = net_output(net, "sample");
    if (x < 0 || out < 0 || net_input(net, "timestep") < 0)
        die("internal: a denoiser needs a network with inputs sample, timestep and output sample");
    size_t want = (size_t)output.channels * (output.learned_var ? 2 : 1);
    if (net_channels(net, x) != output.channels || (size_t)net_channels(net, out) != want)
        die("internal: the network's channels (%d in, %d out) do not fit its output layout",
            net_channels(net, x), net_channels(net, out));
    int class_rows = 0;
    if (net_input(net, "class_labels") >= 0) {
        const ParamInfo *table = net_find_param(net, "class_embedding.weight");
        if (!table) die("internal: a network with class_labels has no class_embedding.weight");
        class_rows = (int)table->shape[0];
    }
    *d = (NetDenoiser){
        .base = {.predict = net_predict, .predict_at = net_predict_at, .be = net->be, .max_batch = net->max_batch,
                 .sample_size = net_per_sample(net, x), .output = output},
        .net = net,
        .weights = weights,
        .t_host = xmalloc((size_t)net->max_batch * sizeof(float)),
        .class_rows = class_rows,
    };
}

void net_denoiser_free(NetDenoiser *d) {
    free(d->t_host);
    d->t_host = NULL;
}
