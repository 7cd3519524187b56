/* memcrypt enclave SDK: ECALL dispatch, host-buffer checks, heap, OCALLs and a tiny libc.
 * Compiled into every enclave by `sgxtool sdk --ldflags`. */
#include "enclave.h"

/* Thread-data page, at the GS base (sgxtool.layout.THREAD_DATA; stub scratch from 0x40). */
#define TD_HEAP 0x20
#define TD_HEAP_SIZE 0x28
#define TD_ENCLAVE_SIZE 0x30
#define TD_SCRATCH 0x48
#define TD_SCRATCH_SIZE 0x50

#define R_X86_64_RELATIVE 8
#define OCALL_PRINT 0
#define OCALL_HOST 1

typedef struct {
    int64_t offset; /* of the function, from this entry */
    char name[56];
} ecall_entry_t;

typedef struct {
    uint64_t offset, info;
    int64_t addend;
} rela_t;

extern const char __ehdr_start[];
extern const ecall_entry_t __sgx_ecalls_start[], __sgx_ecalls_end[];
extern const rela_t __sgx_rela_start[], __sgx_rela_end[];
long __sgx_ocall_raw(uint64_t number, uint64_t request_len);

typedef long (*ecall_fn)(const uint8_t *, size_t, uint8_t *, size_t);

static int relocated;
static size_t heap_used;

static uint64_t td_read(uint64_t off) {
    uint64_t v;
    __asm__ volatile("mov %%gs:(%1), %0" : "=r"(v) : "r"(off));
    return v;
}

void *sgx_enclave_base(void) { return (void *)__ehdr_start; }
size_t sgx_enclave_size(void) { return td_read(TD_ENCLAVE_SIZE); }

int sgx_is_within_enclave(const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p, base = (uintptr_t)__ehdr_start, size = sgx_enclave_size();
    return a + n >= a && a >= base && a + n <= base + size;
}

int sgx_is_outside_enclave(const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p, base = (uintptr_t)__ehdr_start, size = sgx_enclave_size();
    if (a + n < a) return 0; /* wraps around */
    return a + n <= base || a >= base + size;
}

/* Pages are measured unrelocated; apply R_X86_64_RELATIVE once, on the first entry. */
static void relocate(void) {
    uintptr_t base = (uintptr_t)__ehdr_start;
    for (const rela_t *r = __sgx_rela_start; r < __sgx_rela_end; r++)
        if ((r->info & 0xffffffff) == R_X86_64_RELATIVE)
            *(uint64_t *)(base + r->offset) = base + (uint64_t)r->addend;
    relocated = 1;
}

/* Zeroed: an unmeasured heap holds whatever the host put there before EINIT, and a
 * measured one what earlier ECALLs left; neither may reach code that expects fresh memory. */
void *sgx_alloc(size_t n) {
    size_t size = td_read(TD_HEAP_SIZE);
    n = (n + 15) & ~(size_t)15;
    if (n > size - heap_used) return 0;
    void *p = (void *)((uintptr_t)__ehdr_start + td_read(TD_HEAP) + heap_used);
    heap_used += n;
    memset(p, 0, n);
    return p;
}

long __sgx_ecall(uint64_t index, const uint8_t *in, size_t in_len, uint8_t *out,
                 size_t out_cap) {
    if (!relocated) relocate();
    size_t count = (size_t)(__sgx_ecalls_end - __sgx_ecalls_start);
    if (index >= count) return SGX_ERR_BAD_ECALL;
    /* Host pointers must lie wholly outside the enclave, or the host could make the
     * enclave copy its own secrets out (or overwrite them) through "its" buffers. */
    if (!sgx_is_outside_enclave(in, in_len) || !sgx_is_outside_enclave(out, out_cap))
        return SGX_ERR_BAD_BUFFER;
    size_t mark = heap_used;
    uint8_t *ein = sgx_alloc(in_len), *eout = sgx_alloc(out_cap);
    long r = SGX_ERR_OUT_OF_MEMORY;
    if (ein && eout) {
        memcpy(ein, in, in_len);
        const ecall_entry_t *e = &__sgx_ecalls_start[index];
        ecall_fn fn = (ecall_fn)((uintptr_t)e + (uintptr_t)e->offset);
        r = fn(ein, in_len, eout, out_cap);
        if (r > (long)out_cap) r = SGX_ERR_OUTPUT_TOO_LARGE;
        if (r > 0) memcpy(out, eout, (size_t)r);
        /* Only what was copied in and out is wiped: the rest of the output buffer never
         * left the enclave, and wiping all of it would cost every call out_cap bytes. */
        sgx_wipe(ein, in_len);
        if (r > 0) sgx_wipe(eout, (size_t)r);
    }
    heap_used = mark;
    return r;
}

/* ---- OCALLs ------------------------------------------------------------------------ */
static uint8_t *scratch(size_t *size) {
    uint8_t *p = (uint8_t *)td_read(TD_SCRATCH);
    *size = td_read(TD_SCRATCH_SIZE);
    return sgx_is_outside_enclave(p, *size) ? p : 0;
}

long sgx_print(const char *text) {
    size_t cap, n = strlen(text);
    uint8_t *buf = scratch(&cap);
    if (!buf) return SGX_ERR_OCALL;
    if (n > cap) n = cap;
    memcpy(buf, text, n);
    return __sgx_ocall_raw(OCALL_PRINT, n);
}

long sgx_ocall(const char *name, const void *in, size_t in_len, void *out, size_t out_cap) {
    size_t cap, nlen = strlen(name) + 1;
    uint8_t *buf = scratch(&cap);
    if (!buf || nlen > cap || in_len > cap - nlen) return SGX_ERR_OCALL;
    memcpy(buf, name, nlen);
    memcpy(buf + nlen, in, in_len);
    long r = __sgx_ocall_raw(OCALL_HOST, nlen + in_len);
    buf = scratch(&cap); /* the host may hand over a different buffer on return */
    if (r < 0 || !buf || (size_t)r > cap) return SGX_ERR_OCALL;
    if ((size_t)r > out_cap) return SGX_ERR_OUTPUT_TOO_LARGE;
    memcpy(out, buf, (size_t)r);
    return r;
}

/* ---- identity and randomness ------------------------------------------------------- */
void sgx_self_report(sgx_report_t *report) {
    static sgx_targetinfo_t target; /* all zero: a report nobody needs to verify */
    static sgx_reportdata_t data;
    sgx_report(&target, &data, report);
}

int sgx_random(void *buf, size_t n) {
    uint8_t *p = buf;
    while (n) {
        uint64_t v;
        unsigned char ok = 0;
        for (int tries = 0; tries < 10 && !ok; tries++)
            __asm__ volatile("rdrand %0; setc %1" : "=r"(v), "=qm"(ok) : : "cc");
        if (!ok) return -1;
        size_t k = n < 8 ? n : 8;
        memcpy(p, &v, k);
        p += k;
        n -= k;
    }
    return 0;
}

void sgx_wipe(void *p, size_t n) {
    memset(p, 0, n);
    __asm__ volatile("" : : "r"(p) : "memory");
}

/* ---- libc subset: string instructions keep the emulated instruction count low ------- */
void *memcpy(void *dst, const void *src, size_t n) {
    void *d = dst;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
    return dst;
}

void *memmove(void *dst, const void *src, size_t n) {
    if ((uintptr_t)dst <= (uintptr_t)src || (uintptr_t)dst >= (uintptr_t)src + n)
        return memcpy(dst, src, n);
    uint8_t *d = (uint8_t *)dst + n - 1;
    const uint8_t *s = (const uint8_t *)src + n - 1;
    __asm__ volatile("std; rep movsb; cld" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return dst;
}

/* Eight bytes a step, then the tail: the simulator counts each repetition of a string
 * instruction against the budget, and every ECALL zeroes its whole output buffer. */
void *memset(void *dst, int c, size_t n) {
    void *d = dst;
    size_t words = n / 8, rest = n % 8;
    uint64_t pattern = 0x0101010101010101ull * (uint8_t)c;
    __asm__ volatile("rep stosq" : "+D"(d), "+c"(words) : "a"(pattern) : "memory");
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(rest) : "a"(c) : "memory");
    return dst;
}

int memcmp(const void *a, const void *b, size_t n) {
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i]) return x[i] - y[i];
    return 0;
}

int sgx_ct_compare(const void *a, const void *b, size_t n) {
    const uint8_t *x = a, *y = b;
    uint8_t diff = 0;
    for (size_t i = 0; i < n; i++) diff |= x[i] ^ y[i];
    return diff;
}

size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

int strcmp(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return (unsigned char)*a - (unsigned char)*b;
}
