/* The model image, linked into flash as read-only data, 64-byte aligned
 * as tlm_model_open requires. TLM_FW_MODEL_PATH comes from build.sh. A
 * signed model (TLM_FW_SIGNED) has 76 bytes before its image: it starts
 * 52 bytes past a 64-byte boundary, so that the image inside is aligned. */
    .section .rodata.tlm_fw_model, "a"
    .balign 64
#ifdef TLM_FW_SIGNED
    .skip 52
#endif
    .global tlm_fw_model
tlm_fw_model:
    .incbin TLM_FW_MODEL_PATH
    .global tlm_fw_model_end
tlm_fw_model_end:
