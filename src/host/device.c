/* The device table. RAM is what one contiguous region offers a firmware
 * (the linker script's RAM region), not the chip's total where that is
 * split into banks; flash is the part's (or the usual module's) own. */
#include <string.h>

#include "device.h"

static const tlm_device devices[] = {
    {"stm32h743", "cortex-m7", "STM32H743 (Cortex-M7, FPU, 2 MB flash, 512 KB AXI SRAM of its 1 MB)", 512, 2048, 480, NULL},
    {"stm32f746", "cortex-m7", "STM32F746 (Cortex-M7, FPU, 1 MB flash, 320 KB SRAM)", 320, 1024, 216, NULL},
    {"stm32f722", "cortex-m7", "STM32F722 (Cortex-M7, FPU, 512 KB flash, 256 KB SRAM)", 256, 512, 216, NULL},
    {"nrf52840", "cortex-m4", "nRF52840 (Cortex-M4F, single-precision FPU, 1 MB flash, 256 KB RAM)", 256, 1024, 64, NULL},
    {"stm32f405", "cortex-m4",
     "STM32F405/F407 (Cortex-M4F, single-precision FPU, 1 MB flash, 128 KB SRAM); firmware: the board's own image", 128,
     1024, 168, "stm32f405"},
    {"stm32f446", "cortex-m4", "STM32F446 (Cortex-M4F, single-precision FPU, 512 KB flash, 128 KB SRAM)", 128, 512, 180, NULL},
    {"stm32f411", "cortex-m4", "STM32F411 (Cortex-M4F, single-precision FPU, 512 KB flash, 128 KB SRAM)", 128, 512, 100, NULL},
    {"rp2040", "cortex-m0plus", "RP2040 (two Cortex-M0+, no FPU, 2 MB QSPI flash on the Pico, 256 KB striped SRAM)", 256,
     2048, 133, NULL},
    {"esp32c3", "esp32c3", "ESP32-C3 (RV32IMC, no FPU, 4 MB flash module, about 320 KB SRAM free for an app)", 320,
     4096, 160, NULL},
    {"esp8266", "lx106", "ESP8266 (Xtensa LX106, no FPU, 1 MB of flash mapped, 80 KB data RAM)", 80, 1024, 160, NULL},
};

size_t tlm_device_count(void) { return sizeof devices / sizeof devices[0]; }

const tlm_device *tlm_device_at(size_t i) { return i < tlm_device_count() ? &devices[i] : NULL; }

const tlm_device *tlm_device_find(const char *name)
{
    for (size_t i = 0; i < tlm_device_count(); i++)
        if (!strcmp(devices[i].name, name)) return &devices[i];
    return NULL;
}
