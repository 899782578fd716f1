/* A real STM32F405/F407 image (Cortex-M4F at 168 MHz, 1 MB flash at
 * 0x08000000, 128 KB of SRAM at 0x20000000): what a user flashes onto an
 * Adafruit Feather STM32F405, a pyboard, a Netduino Plus 2 or an
 * STM32F4-Discovery, and what the tests run on QEMU's netduinoplus2, the
 * same bytes. No debugger is assumed: the console is a USART at 115200 8N1
 * (TLM_FW_UART: 1 on PA9/PA10, 2 on PA2/PA3, 3 on PB10/PB11, 6 on PC6/PC7),
 * and the end is an "EXIT n" line, after which the core sleeps (a board has
 * nothing to return to; build.sh stops QEMU when it sees that line).
 *
 * The clock comes from the internal 16 MHz oscillator through the PLL to
 * 168 MHz (the same on every board, whatever crystal it has), with five
 * flash wait states, prefetch and the flash caches on; every wait on the
 * hardware is bounded, so that where the PLL does not lock (QEMU models no
 * RCC) the core stays at 16 MHz and the CLOCK line says so. */
#include <stdint.h>

#include "fw_io.h"
#include "fw_port.h"

#ifndef TLM_FW_UART
#define TLM_FW_UART 1
#endif

#define REG(a) (*(volatile uint32_t *)(uintptr_t)(a))

#define RCC 0x40023800u
#define RCC_CR (RCC + 0x00u)
#define RCC_PLLCFGR (RCC + 0x04u)
#define RCC_CFGR (RCC + 0x08u)
#define RCC_AHB1ENR (RCC + 0x30u)
#define RCC_APB1ENR (RCC + 0x40u)
#define RCC_APB2ENR (RCC + 0x44u)
#define FLASH_ACR 0x40023C00u

/* The console: USART base, its bus (APB1 or APB2), clock-enable bit, and
 * the TX/RX pins' port (GPIOA..C), numbers and alternate function. */
#if TLM_FW_UART == 1
#define UART_BASE 0x40011000u
#define UART_APB2 1
#define UART_EN (1u << 4)
#define GPIO_PORT 0u
#define PIN_TX 9u
#define PIN_RX 10u
#define PIN_AF 7u
#elif TLM_FW_UART == 2
#define UART_BASE 0x40004400u
#define UART_APB2 0
#define UART_EN (1u << 17)
#define GPIO_PORT 0u
#define PIN_TX 2u
#define PIN_RX 3u
#define PIN_AF 7u
#elif TLM_FW_UART == 3
#define UART_BASE 0x40004800u
#define UART_APB2 0
#define UART_EN (1u << 18)
#define GPIO_PORT 1u
#define PIN_TX 10u
#define PIN_RX 11u
#define PIN_AF 7u
#elif TLM_FW_UART == 6
#define UART_BASE 0x40011400u
#define UART_APB2 1
#define UART_EN (1u << 5)
#define GPIO_PORT 2u
#define PIN_TX 6u
#define PIN_RX 7u
#define PIN_AF 8u
#else
#error "TLM_FW_UART is 1, 2, 3 or 6"
#endif
#define GPIO_BASE (0x40020000u + GPIO_PORT * 0x400u)
#define USART_SR (UART_BASE + 0x00u)
#define USART_DR (UART_BASE + 0x04u)
#define USART_BRR (UART_BASE + 0x08u)
#define USART_CR1 (UART_BASE + 0x0Cu)
#define SR_RXNE (1u << 5)
#define DWT_CTRL 0xE0001000u
#define DWT_CYCCNT 0xE0001004u
#define SR_TC (1u << 6)
#define SR_TXE (1u << 7)

extern uint32_t _estack;

void Reset_Handler(void);
void tlm_fault_c(void);
__attribute__((noreturn)) void tlm_reset_c(void);

static void fault(void) { tlm_fault_c(); }

__attribute__((section(".isr_vector"), used)) const void *const tlm_vectors[16] = {
    &_estack, Reset_Handler, fault, fault, fault, fault, fault, 0, 0, 0, 0, fault, fault, 0, fault, fault,
};

/* (No static variables here: tlm_reset_c sets up .data and .bss after
 * this runs. The clock's state is read back from RCC, the console's from
 * its USART.) */

/* Waits until (REG(a) & mask) == want, at most `tries` reads: 1 if it got there. */
static int wait_for(uint32_t a, uint32_t mask, uint32_t want, uint32_t tries)
{
    while (tries--)
        if ((REG(a) & mask) == want) return 1;
    return 0;
}

/* HSI 16 MHz / 8 * 168 / 2 = 168 MHz (and / 7 = 48 MHz for USB); AHB 168,
 * APB1 42, APB2 84 MHz. Flash wait states are set, and read back, before
 * the switch; if anything does not answer, the core stays on HSI. */
static void clock_init(void)
{
    REG(FLASH_ACR) = 5u | (1u << 8) | (1u << 9) | (1u << 10); /* 5 WS, prefetch, I and D caches */
    if ((REG(FLASH_ACR) & 7u) != 5u) return;
    /* M 8, N 168, P 2, HSI source, Q 7; reserved bits kept as they are */
    REG(RCC_PLLCFGR) = (REG(RCC_PLLCFGR) & 0xF0BC8000u) | 8u | (168u << 6) | (0u << 16) | (7u << 24);
    REG(RCC_CR) |= 1u << 24;                                         /* PLL on */
    if (!wait_for(RCC_CR, 1u << 25, 1u << 25, 100000u)) {
        REG(RCC_CR) &= ~(1u << 24);
        REG(FLASH_ACR) = 0u;
        return;
    }
    REG(RCC_CFGR) = (5u << 10) | (4u << 13); /* APB1 / 4, APB2 / 2 */
    REG(RCC_CFGR) |= 2u;                     /* system clock: the PLL */
    if (!wait_for(RCC_CFGR, 0xCu, 0x8u, 100000u)) {
        REG(RCC_CFGR) = 0u;
        return;
    }
}

/* 168 MHz once the PLL drives the core, else 16 MHz (HSI). */
static uint32_t core_hz(void) { return (REG(RCC_CFGR) & 0xCu) == 0x8u ? 168000000u : 16000000u; }

static void console_init(void)
{
    REG(RCC_AHB1ENR) |= 1u << GPIO_PORT;
    if (UART_APB2) REG(RCC_APB2ENR) |= UART_EN;
    else REG(RCC_APB1ENR) |= UART_EN;
    (void)REG(RCC_AHB1ENR); /* (the clocks reach the peripherals before they are written) */
    const uint32_t pins[2] = {PIN_TX, PIN_RX};
    for (int i = 0; i < 2; i++) {
        const uint32_t p = pins[i];
        REG(GPIO_BASE + 0x00u) = (REG(GPIO_BASE + 0x00u) & ~(3u << (2u * p))) | (2u << (2u * p)); /* alternate */
        REG(GPIO_BASE + 0x08u) |= 2u << (2u * p);                                                  /* fast */
        REG(GPIO_BASE + 0x0Cu) = (REG(GPIO_BASE + 0x0Cu) & ~(3u << (2u * p))) | ((i ? 1u : 0u) << (2u * p)); /* RX pull-up */
        const uint32_t afr = GPIO_BASE + (p < 8u ? 0x20u : 0x24u), sh = 4u * (p & 7u);
        REG(afr) = (REG(afr) & ~(15u << sh)) | (PIN_AF << sh);
    }
    const uint32_t hz = core_hz(), apb = hz == 16000000u ? hz : UART_APB2 ? hz / 2u : hz / 4u;
    REG(USART_BRR) = (apb + 57600u) / 115200u; /* 16x oversampling: mantissa and fraction in one */
    REG(USART_CR1) = (1u << 13) | (1u << 3) | (1u << 2); /* enable, transmitter, receiver */
}

static void put_char(char c)
{
    wait_for(USART_SR, SR_TXE, SR_TXE, 1000000u); /* (bounded: a dead console does not hang the run) */
    REG(USART_DR) = (uint8_t)c;
}

void tlm_fw_puts(const char *s)
{
    if (!(REG(USART_CR1) & (1u << 13))) return; /* (faults before the console is up print nothing) */
    for (; *s; s++) {
        if (*s == '\n') put_char('\r'); /* terminals want CR LF */
        put_char(*s);
    }
}

/* The DWT's cycle counter (enabled in tlm_board_c; QEMU models no DWT,
 * so there it reads 0 and stands still). */
uint32_t tlm_fw_cycles(void) { return REG(DWT_CYCCNT); }

int tlm_fw_getc(void)
{
    while (!(REG(USART_SR) & SR_RXNE)) {
    }
    return (int)(REG(USART_DR) & 0xFFu);
}

/* The status as the line build.sh waits for (on a line of its own, after
 * anything still in the console's buffer), then sleep: a board has nothing
 * to exit to. */
__attribute__((noreturn)) void tlm_fw_exit(int code)
{
    if (fw_line_used()) fw_put_str("\n");
    fw_put_str("EXIT ");
    fw_put_u32((uint32_t)code); /* (the firmware's statuses are 0 to 99) */
    fw_put_str("\n");
    fw_flush();
    wait_for(USART_SR, SR_TC, SR_TC, 1000000u); /* the last byte out of the shift register */
    for (;;) __asm__ volatile("wfi");
}

/* Called from Reset_Handler once the stack is painted: clock and console
 * first (the startup's only work on the hardware), then the common part. */
__attribute__((noreturn, used)) void tlm_board_c(void)
{
    clock_init();
    console_init();
    REG(0xE000EDFCu) |= 1u << 24; /* DEMCR.TRCENA: the DWT on */
    REG(DWT_CYCCNT) = 0u;
    REG(DWT_CTRL) |= 1u;          /* CYCCNTENA */
    tlm_fw_puts(core_hz() == 168000000u ? "CLOCK 168000000\n" : "CLOCK 16000000 (the PLL is not running: on the internal oscillator)\n");
    tlm_reset_c();
}

__attribute__((naked, noreturn)) void Reset_Handler(void)
{
    __asm__ volatile(
        "ldr r0, =0xE000ED88\n ldr r1, [r0]\n orr r1, r1, #(0xF << 20)\n str r1, [r0]\n" /* CP10/CP11: the FPU */
        "dsb\n isb\n"
        "ldr r0, =_sstack\n mov r2, sp\n sub r2, r2, #16\n ldr r1, =0xDEADBEEF\n"
        "1: cmp r0, r2\n bhs 2f\n str r1, [r0], #4\n b 1b\n"
        "2: b tlm_board_c\n");
}
