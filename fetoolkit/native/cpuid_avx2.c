/* LD_PRELOAD shim: the process (and its children) see an AVX2-only x86-64 CPU.
 *
 * Uses Linux CPUID faulting (arch_prctl ARCH_SET_CPUID, 0): every `cpuid` instruction then
 * raises SIGSEGV, which this shim answers with the real result minus AVX-512 (all subsets),
 * AVX-VNNI, AVX512-BF16/FP16 and AMX. Libraries that pick kernels from CPUID (onnxruntime's
 * MLAS, oneDNN, OpenBLAS, torch's cpuinfo) then run their AVX2 + FMA kernels, as on an AMD
 * Zen 2/3 CPU. Used by the tests and benchmarks to exercise the non-VNNI int8 path on a
 * VNNI machine (fetoolkit.native, fetoolkit.cpu). Sets FETOOLKIT_CPUID_MASK=avx2 so that
 * reports say the ISA was masked.
 *
 * The application's own SIGSEGV handler (e.g. Python's faulthandler) still runs for real
 * faults: sigaction() for SIGSEGV is recorded here instead of replacing this handler.
 * Without CPUID faulting (kernel or hypervisor lacks it) the process exits with status 3 and
 * a message, instead of silently running the real ISA.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <asm/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);
static sigaction_fn real_sigaction;
static struct sigaction app_segv; /* the application's SIGSEGV disposition */

static void real_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
}

static void mask(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    if (leaf == 7 && sub == 0) {
        /* EBX: avx512 f, dq, ifma, cd, bw, vl */
        r[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 28) | (1u << 30) | (1u << 31));
        /* ECX: avx512 vbmi, vbmi2, vnni, bitalg, vpopcntdq */
        r[2] &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* EDX: avx512 vp2intersect, amx-bf16, avx512-fp16, amx-tile, amx-int8 */
        r[3] &= ~((1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        /* EAX: avx-vnni, avx512-bf16, amx-fp16, avx-ifma */
        r[0] &= ~((1u << 4) | (1u << 5) | (1u << 21) | (1u << 23));
    }
}

static void on_segv(int sig, siginfo_t *info, void *vctx) {
    ucontext_t *uc = (ucontext_t *)vctx;
    greg_t *g = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    if (ip[0] == 0x0f && ip[1] == 0xa2) { /* cpuid */
        uint32_t r[4], leaf = (uint32_t)g[REG_RAX], sub = (uint32_t)g[REG_RCX];
        real_cpuid(leaf, sub, r);
        mask(leaf, sub, r);
        g[REG_RAX] = r[0];
        g[REG_RBX] = r[1];
        g[REG_RCX] = r[2];
        g[REG_RDX] = r[3];
        g[REG_RIP] += 2;
        return;
    }
    if (app_segv.sa_flags & SA_SIGINFO) {
        if (app_segv.sa_sigaction) {
            app_segv.sa_sigaction(sig, info, vctx);
            return;
        }
    } else if (app_segv.sa_handler != SIG_DFL && app_segv.sa_handler != SIG_IGN) {
        app_segv.sa_handler(sig);
        return;
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    real_sigaction(SIGSEGV, &dfl, NULL); /* the faulting instruction runs again, under the default */
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (!real_sigaction) real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    if (sig != SIGSEGV) return real_sigaction(sig, act, old);
    if (old) *old = app_segv;
    if (act) app_segv = *act;
    return 0;
}

__attribute__((constructor)) static void install(void) {
    static const char msg[] = "cpuid_avx2: CPUID faulting is not available here (arch_prctl ARCH_SET_CPUID)\n";
    struct sigaction sa;
    real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    real_sigaction(SIGSEGV, &sa, NULL);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        if (write(2, msg, sizeof msg - 1) < 0) _exit(3);
        _exit(3);
    }
    setenv("FETOOLKIT_CPUID_MASK", "avx2", 1);
}
