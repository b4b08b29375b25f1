/*
 * cpuid_mask.c: hide CPU features from one process, to run the code paths of a lesser x86 CPU.
 *
 * LD_PRELOADed (bench/isa_emulation/run.py builds and preloads it). Its constructor turns on
 * CPUID faulting for the process (Linux arch_prctl(ARCH_SET_CPUID, 0), on CPUs/VMs with the
 * `cpuid_fault` flag): every CPUID instruction then raises SIGSEGV; the handler executes the real
 * CPUID with faulting briefly off, clears the bits of the emulated class and returns past the
 * instruction. Child threads inherit the faulting flag. A SIGSEGV handler installed later (Python's
 * faulthandler, as pytest enables it) is recorded instead of installed and gets every other SIGSEGV.
 * Every library that dispatches on CPUID
 * (onnxruntime's MLAS and cpuinfo, torch's ATen / oneDNN / MKL, LLVM's host detection in Numba)
 * then picks the kernels it picks on the emulated CPU. Opens of /proc/cpuinfo get a copy whose
 * `flags` lines lack the hidden features, so /proc/cpuinfo readers (engine.models.quantize) agree.
 *
 * What it cannot hide: instructions code runs without asking CPUID (glibc picked its string
 * functions before this library loaded), and the microarchitecture: the emulated class runs at
 * this core's speed per instruction, not at the speed of a real CPU of that class.
 *
 * EMBED_ISA_EMULATE=avx2 | avx_vnni | avx512 (see run.py for the bits).
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define ARCH_SET_CPUID 0x1012 /* <asm/prctl.h>, not needed from the kernel headers */

/* bits to clear: leaf 7 subleaf 0 (EBX, ECX, EDX), leaf 7 subleaf 1 (EAX, EDX) */
static unsigned m7b, m7c, m7d, m71a, m71d;
static const char *hidden_flags[64];
static int n_hidden;

#define AVX512_7B ((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31))
#define AVX512_7C ((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14))
#define VNNI_7C (1u << 11)
#define AVX512_7D ((1u << 2) | (1u << 3) | (1u << 8) | (1u << 23))
#define AMX_7D ((1u << 22) | (1u << 24) | (1u << 25))
#define AVX_VNNI_71A (1u << 4)
#define AVX512_BF16_71A (1u << 5)
#define AVX_VNNI_INT_71D ((1u << 4) | (1u << 5) | (1u << 10))

static const char *AVX512_NAMES[] = {"avx512f", "avx512dq", "avx512ifma", "avx512pf", "avx512er", "avx512cd",
    "avx512bw", "avx512vl", "avx512vbmi", "avx512_vbmi2", "avx512_vnni", "avx512_bitalg", "avx512_vpopcntdq",
    "avx512_4vnniw", "avx512_4fmaps", "avx512_vp2intersect", "avx512_fp16", "avx512_bf16", 0};
static const char *AMX_NAMES[] = {"amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "amx_complex", 0};
static const char *AVX_VNNI_NAMES[] = {"avx_vnni", "avx_vnni_int8", "avx_ne_convert", "avx_vnni_int16", 0};

static void hide(const char **names) {
    for (; *names && n_hidden < 63; names++) hidden_flags[n_hidden++] = *names;
}

static long set_cpuid(int on) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, on); }

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);
static sigaction_fn real_sigaction;
static int active;                   /* our handler is installed */
static struct sigaction user_segv;   /* the SIGSEGV disposition the program asked for (SIG_DFL at first) */

static void on_segv(int sig, siginfo_t *info, void *ctx) {
    ucontext_t *uc = (ucontext_t *)ctx;
    greg_t *g = uc->uc_mcontext.gregs;
    unsigned char *ip = (unsigned char *)g[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* a real segfault: the program's handler, or the default */
        if (user_segv.sa_flags & SA_SIGINFO) {
            user_segv.sa_sigaction(sig, info, ctx);
        } else if (user_segv.sa_handler != SIG_DFL && user_segv.sa_handler != SIG_IGN) {
            user_segv.sa_handler(sig);
        } else {
            struct sigaction dfl;
            memset(&dfl, 0, sizeof dfl);
            dfl.sa_handler = SIG_DFL;
            real_sigaction(SIGSEGV, &dfl, NULL); /* the instruction faults again, now fatally */
        }
        return;
    }
    unsigned leaf = (unsigned)g[REG_RAX], sub = (unsigned)g[REG_RCX], a, b, c, d;
    set_cpuid(1);
    __cpuid_count(leaf, sub, a, b, c, d);
    set_cpuid(0);
    if (leaf == 7 && sub == 0) { b &= ~m7b; c &= ~m7c; d &= ~m7d; }
    if (leaf == 7 && sub == 1) { a &= ~m71a; d &= ~m71d; }
    g[REG_RAX] = a; g[REG_RBX] = b; g[REG_RCX] = c; g[REG_RDX] = d;
    g[REG_RIP] += 2;
}

__attribute__((constructor)) static void start(void) {
    const char *isa = getenv("EMBED_ISA_EMULATE");
    if (!isa || !*isa) return;
    if (!strcmp(isa, "avx2")) {
        m7b = AVX512_7B; m7c = AVX512_7C; m7d = AVX512_7D | AMX_7D;
        m71a = AVX_VNNI_71A | AVX512_BF16_71A; m71d = AVX_VNNI_INT_71D;
        hide(AVX512_NAMES); hide(AMX_NAMES); hide(AVX_VNNI_NAMES);
    } else if (!strcmp(isa, "avx_vnni")) {
        m7b = AVX512_7B; m7c = AVX512_7C; m7d = AVX512_7D | AMX_7D; m71a = AVX512_BF16_71A;
        hide(AVX512_NAMES); hide(AMX_NAMES);
    } else if (!strcmp(isa, "avx512")) { /* AVX-512 without VNNI (Skylake-SP class) */
        m7c = VNNI_7C | (1u << 12) | (1u << 14) | (1u << 6); m7d = AMX_7D | (1u << 8) | (1u << 23);
        m71a = AVX_VNNI_71A | AVX512_BF16_71A; m71d = AVX_VNNI_INT_71D;
        static const char *n[] = {"avx512_vnni", "avx512_bitalg", "avx512_vpopcntdq", "avx512_vbmi2",
                                  "avx512_vp2intersect", "avx512_fp16", "avx512_bf16", 0};
        hide(n); hide(AMX_NAMES); hide(AVX_VNNI_NAMES);
    } else {
        fprintf(stderr, "cpuid_mask: EMBED_ISA_EMULATE=%s is not one of avx2, avx_vnni, avx512\n", isa);
        _exit(2);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    user_segv.sa_handler = SIG_DFL;
    real_sigaction(SIGSEGV, &sa, NULL);
    active = 1;
    if (set_cpuid(0) != 0) {
        fprintf(stderr, "cpuid_mask: this kernel/CPU has no CPUID faulting (arch_prctl ARCH_SET_CPUID failed); "
                        "cannot emulate %s here\n", isa);
        _exit(2);
    }
}

/* SIGSEGV stays ours: what the program installs is kept in user_segv and called for real faults */
int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (!real_sigaction) real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    if (sig != SIGSEGV || !active) return real_sigaction(sig, act, old);
    if (old) *old = user_segv;
    if (act) user_segv = *act;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    if (sigaction(sig, &act, &old) != 0) return SIG_ERR;
    return (old.sa_flags & SA_SIGINFO) ? (sighandler_t)old.sa_sigaction : old.sa_handler;
}

/* /proc/cpuinfo without the hidden flags: a memfd copy */
static int is_hidden(const char *w, size_t n) {
    for (int i = 0; i < n_hidden; i++)
        if (strlen(hidden_flags[i]) == n && !strncmp(hidden_flags[i], w, n)) return 1;
    return 0;
}

static int filtered_cpuinfo(void) {
    static int (*real_open)(const char *, int, ...);
    if (!real_open) real_open = dlsym(RTLD_NEXT, "open");
    int fd = real_open("/proc/cpuinfo", O_RDONLY);
    if (fd < 0) return fd;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = read(fd, buf + len, cap - len)) > 0) {
        len += r;
        if (len == cap) buf = realloc(buf, cap *= 2);
    }
    close(fd);
    int out = memfd_create("cpuinfo", 0);
    size_t i = 0;
    while (i < len) {
        size_t e = i;
        while (e < len && buf[e] != '\n') e++;
        int is_flags = (!strncmp(buf + i, "flags", 5) || !strncmp(buf + i, "Features", 8));
        const char *colon = memchr(buf + i, ':', e - i);
        if (is_flags && colon) {
            size_t p = colon - buf + 1;
            write(out, buf + i, p - i);
            while (p < e) {
                while (p < e && buf[p] == ' ') p++;
                size_t w = p;
                while (w < e && buf[w] != ' ') w++;
                if (w > p && !is_hidden(buf + p, w - p)) { write(out, " ", 1); write(out, buf + p, w - p); }
                p = w;
            }
            write(out, "\n", 1);
        } else {
            write(out, buf + i, e - i + (e < len));
        }
        i = e + 1;
    }
    free(buf);
    lseek(out, 0, SEEK_SET);
    return out;
}

static int wants_cpuinfo(const char *path) { return n_hidden && path && !strcmp(path, "/proc/cpuinfo"); }

#define OPEN_WRAPPER(name)                                                         \
    int name(const char *path, int flags, ...) {                                   \
        static int (*real)(const char *, int, ...);                                \
        if (wants_cpuinfo(path)) return filtered_cpuinfo();                        \
        if (!real) real = dlsym(RTLD_NEXT, #name);                                 \
        va_list ap; va_start(ap, flags); int mode = va_arg(ap, int); va_end(ap);    \
        return real(path, flags, mode);                                            \
    }
OPEN_WRAPPER(open)
OPEN_WRAPPER(open64)

#define OPENAT_WRAPPER(name)                                                       \
    int name(int dirfd, const char *path, int flags, ...) {                        \
        static int (*real)(int, const char *, int, ...);                           \
        if (wants_cpuinfo(path)) return filtered_cpuinfo();                        \
        if (!real) real = dlsym(RTLD_NEXT, #name);                                 \
        va_list ap; va_start(ap, flags); int mode = va_arg(ap, int); va_end(ap);    \
        return real(dirfd, path, flags, mode);                                     \
    }
OPENAT_WRAPPER(openat)
OPENAT_WRAPPER(openat64)

FILE *fopen(const char *path, const char *mode) {
    static FILE *(*real)(const char *, const char *);
    if (wants_cpuinfo(path)) return fdopen(filtered_cpuinfo(), "r");
    if (!real) real = dlsym(RTLD_NEXT, "fopen");
    return real(path, mode);
}
FILE *fopen64(const char *path, const char *mode) { return fopen(path, mode); }
