/* `ddpm eval`: the variational bound in bits/dim of a checkpoint on a test set. */
#ifndef DDPM_EVAL_H
#define DDPM_EVAL_H

#include "backend.h"

int eval_main(int argc, char **argv, const Backend *be);

#endif
