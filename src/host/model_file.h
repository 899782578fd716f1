/* A model image file mapped read-only and validated. */
#ifndef TLM_HOST_MODEL_FILE_H
#define TLM_HOST_MODEL_FILE_H

#include "fileio.h"
#include "tritlm/model.h"

typedef struct tlm_model_file {
    tlm_mapped map;
    tlm_model model;
} tlm_model_file;

tlm_status tlm_model_file_open(tlm_model_file *f, const char *path, tlm_error *err);
void tlm_model_file_close(tlm_model_file *f);

#endif
