/* The model image, linked into flash as read-only data, 64-byte aligned
 * as tlm_model_open requires. TLM_FW_MODEL_PATH comes from build.sh. */
    .section .rodata.tlm_fw_model, "a"
    .balign 64
    .global tlm_fw_model
tlm_fw_model:
    .incbin TLM_FW_MODEL_PATH
    .global tlm_fw_model_end
tlm_fw_model_end:
