/* The registry (models.h): one case per objective. */
#include "models.h"

#include "classifier.h"
#include "autoencoder.h"
#include "unet.h"
#include "util.h"

static Net *build_network(const Backend *be, const Config *cfg, int max_batch, int input_grad) {
    switch ((ObjectiveKind)cfg->objective) {
    case OBJECTIVE_DDPM: return unet_build(be, cfg, max_batch, input_grad);
    case OBJECTIVE_CLASSIFIER: return classifier_build(be, cfg, max_batch, input_grad, NULL);
    case OBJECTIVE_FLOW: return unet_build(be, cfg, max_batch, input_grad);   /* time 1000 t */
    case OBJECTIVE_VAE: return autoencoder_build(be, cfg, max_batch, input_grad);
    default: break;
    }
    return NULL;
}

Net *model_build(const Backend *be, const Config *cfg, int max_batch, int input_grad) {
    Net *net = build_network(be, cfg, max_batch, input_grad);
    if (net) {
        if (cfg->mixed_precision == MIXED_PRECISION_BF16) net_use_bf16(net);
        return net;
    }
    die("objective=%s: this build has no network for it",
        config_enum_name("objective", cfg->objective));
    return NULL;
}

Objective *objective_create(const Backend *be, const Config *cfg, int b, int B) {
    switch ((ObjectiveKind)cfg->objective) {
    case OBJECTIVE_DDPM: return objective_ddpm_create(be, cfg, b, B);
    case OBJECTIVE_CLASSIFIER: return objective_classifier_create(be, cfg, b, B);
    case OBJECTIVE_FLOW: return objective_flow_create(be, cfg, b, B);
    case OBJECTIVE_VAE: return objective_vae_create(be, cfg, b, B);
    default: break;
    }
    die("objective=%s: this build cannot train it", config_enum_name("objective", cfg->objective));
    return NULL;
}
