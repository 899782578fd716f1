/* tritlm device API: include this one header in firmware. */
#ifndef TRITLM_H
#define TRITLM_H
#include "tritlm/status.h"
#include "tritlm/format.h"
#include "tritlm/wtype.h"
#include "tritlm/model.h"
#include "tritlm/runtime.h"
#include "tritlm/tokenizer.h"
#include "tritlm/sampler.h"
#include "tritlm/classify.h"
#include "tritlm/dp.h"
#include "tritlm/fed.h"
#include "tritlm/tune.h"
#endif
