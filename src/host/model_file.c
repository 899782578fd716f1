#include <string.h>

#include "model_file.h"

tlm_status tlm_model_file_open(tlm_model_file *f, const char *path, tlm_error *err)
{
    memset(f, 0, sizeof *f);
    tlm_status st = tlm_map_file(path, &f->map, err);
    if (st) return st;
    st = tlm_model_open(&f->model, f->map.addr, f->map.bytes, err);
    if (st) {
        tlm_error inner = *err;
        tlm_fail(err, st, "%s: %s", path, inner.msg);
        tlm_unmap_file(&f->map);
    }
    return st;
}

void tlm_model_file_close(tlm_model_file *f) { tlm_unmap_file(&f->map); }
