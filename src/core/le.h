/* Little-endian field access for image headers (any host alignment). */
#ifndef TLM_CORE_LE_H
#define TLM_CORE_LE_H

#include <stdint.h>
#include <string.h>

static inline uint16_t tlm_rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t tlm_rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t tlm_rd64(const uint8_t *p) { return tlm_rd32(p) | ((uint64_t)tlm_rd32(p + 4) << 32); }
static inline float tlm_rdf32(const uint8_t *p)
{
    uint32_t u = tlm_rd32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline void tlm_wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void tlm_wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void tlm_wr64(uint8_t *p, uint64_t v) { tlm_wr32(p, (uint32_t)v); tlm_wr32(p + 4, (uint32_t)(v >> 32)); }
static inline void tlm_wrf32(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    tlm_wr32(p, u);
}

#endif
