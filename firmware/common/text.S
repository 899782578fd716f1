/* The device's own text for on-device tuning (build.sh --tune), linked into
 * flash as read-only data. TLM_FW_TEXT_PATH comes from build.sh. */
    .section .rodata.tlm_fw_text, "a"
    .global tlm_fw_text
tlm_fw_text:
    .incbin TLM_FW_TEXT_PATH
    .global tlm_fw_text_end
tlm_fw_text_end:
