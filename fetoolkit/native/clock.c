/* Clock probe: dep_adds(n) runs n x 64 register-to-register adds (x += x), each depending on the one before it
 * (one cycle of latency each on every x86-64 core since the Pentium Pro), so its duration is
 * n x 64 cycles at whatever clock the core runs now (turbo included). The loop counter is an
 * independent chain that runs beside it. fetoolkit.cpu.measured_clock_hz times it.
 */
#include <stdint.h>

#define A1 "add %0, %0\n\t"
#define A8 A1 A1 A1 A1 A1 A1 A1 A1
#define A64 A8 A8 A8 A8 A8 A8 A8 A8

uint64_t dep_adds(uint64_t n) {
    uint64_t x = 0;
    for (uint64_t i = 0; i < n; i++) {
        __asm__ volatile(A64 : "+r"(x));
    }
    return x;
}
