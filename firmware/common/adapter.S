/* An adapter (a low-rank update of the model, tlm_runtime_use_adapter),
 * linked into flash next to the model and read in place.
 * TLM_FW_ADAPTER_PATH comes from build.sh. */
    .section .rodata.tlm_fw_adapter, "a"
    .balign 4
    .global tlm_fw_adapter
tlm_fw_adapter:
    .incbin TLM_FW_ADAPTER_PATH
    .global tlm_fw_adapter_end
tlm_fw_adapter_end:
