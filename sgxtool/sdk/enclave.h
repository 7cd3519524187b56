/* memcrypt enclave SDK: the one header an enclave includes.
 *
 * Build:  cc $(sgxtool sdk --cflags) enclave.c $(sgxtool sdk --ldflags) -o enclave.elf
 *
 * ECALLs: define each entry point with SGX_ECALL(name) { ... }. The body sees
 *   const uint8_t *in, size_t in_len   the caller's input, already copied into the enclave
 *   uint8_t *out, size_t out_cap       an enclave buffer copied out to the caller afterwards
 * and returns the number of output bytes (0..out_cap) or a negative SGX_ERR_* code.
 * Only functions in the measured .sgx_ecalls table can be entered; the host names them
 * and the entry stub bounds-checks the index it is given.
 */
#ifndef MEMCRYPT_ENCLAVE_H
#define MEMCRYPT_ENCLAVE_H

#include <stddef.h>
#include <stdint.h>

/* ---- status codes an ECALL returns (negative) ------------------------------------- */
#define SGX_ERR_BAD_ECALL (-1)        /* no ECALL with that index */
#define SGX_ERR_BAD_BUFFER (-2)       /* a host buffer overlaps the enclave or wraps */
#define SGX_ERR_OUT_OF_MEMORY (-3)    /* the enclave heap is exhausted */
#define SGX_ERR_OUTPUT_TOO_LARGE (-4) /* the result does not fit the caller's buffer */
#define SGX_ERR_BAD_ENTRY (-5)        /* entered in a state the stub refuses */
#define SGX_ERR_UNSEAL (-6)           /* sealed data altered, or sealed by someone else */
#define SGX_ERR_KEY (-7)              /* EGETKEY refused the request */
#define SGX_ERR_INVALID_INPUT (-8)    /* the ECALL rejected its input */
#define SGX_ERR_OCALL (-9)            /* the host failed or refused an OCALL */

/* ---- ECALL definition ------------------------------------------------------------- */
/* Each table entry is 64 bytes: the function's offset from the entry itself (resolved
 * at link time, so the table needs no relocation), then the NUL-terminated name (at most
 * 55 characters; a longer name fails to assemble). */
#define SGX_ECALL(fn)                                                                     \
    long fn(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap)              \
        __attribute__((used));                                                            \
    __asm__(".pushsection .sgx_ecalls,\"a\",@progbits\n"                                  \
            ".balign 64\n"                                                                \
            "1: .quad " #fn " - 1b\n"                                                     \
            ".asciz \"" #fn "\"\n"                                                        \
            ".org 1b + 64\n"                                                              \
            ".popsection\n");                                                             \
    long fn(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap)

/* ---- architectural structures (SDM vol. 3D 38.x; byte-exact) ---------------------- */
enum { SGX_KEY_EINITTOKEN = 0, SGX_KEY_PROVISION = 1, SGX_KEY_PROVISION_SEAL = 2,
       SGX_KEY_REPORT = 3, SGX_KEY_SEAL = 4 };
enum { SGX_KEYPOLICY_MRENCLAVE = 1, SGX_KEYPOLICY_MRSIGNER = 2 };

typedef struct __attribute__((aligned(512))) {
    uint16_t keyname;
    uint16_t keypolicy;
    uint16_t isvsvn;
    uint16_t reserved1;
    uint8_t cpusvn[16];
    uint64_t attributemask[2]; /* flags, xfrm */
    uint8_t keyid[32];
    uint32_t miscmask;
    uint16_t configsvn;
    uint8_t reserved2[434];
} sgx_keyrequest_t;

typedef struct __attribute__((aligned(512))) {
    uint8_t measurement[32];
    uint64_t attributes[2];
    uint8_t reserved1[2];
    uint16_t config_svn;
    uint32_t miscselect;
    uint8_t reserved2[8];
    uint8_t config_id[64];
    uint8_t reserved3[384];
} sgx_targetinfo_t;

typedef struct __attribute__((aligned(128))) {
    uint8_t d[64];
} sgx_reportdata_t;

typedef struct __attribute__((aligned(512))) {
    uint8_t cpusvn[16];
    uint32_t miscselect;
    uint8_t reserved1[12];
    uint8_t isvextprodid[16];
    uint64_t attributes[2];
    uint8_t mrenclave[32];
    uint8_t reserved2[32];
    uint8_t mrsigner[32];
    uint8_t reserved3[32];
    uint8_t configid[64];
    uint16_t isvprodid;
    uint16_t isvsvn;
    uint16_t configsvn;
    uint8_t reserved4[42];
    uint8_t isvfamilyid[16];
    uint8_t reportdata[64];
    uint8_t keyid[32];
    uint8_t mac[16];
} sgx_report_t;

typedef struct __attribute__((aligned(64))) {
    uint64_t flags;
    uint8_t reserved[56];
} sgx_secinfo_t;

/* ---- ENCLU leaves (SDM vol. 3D 38.x, ENCLU leaf numbers in RAX) ------------------- */
/* EGETKEY: RBX = KEYREQUEST, RCX = 16-byte output; RAX = 0 or an SGX error code. */
static inline long sgx_getkey(const sgx_keyrequest_t *req, uint8_t key[16]) {
    uint8_t out[16] __attribute__((aligned(16)));
    long rax = 1;
    __asm__ volatile("enclu" : "+a"(rax) : "b"(req), "c"(out) : "memory", "cc");
    for (int i = 0; i < 16; i++) key[i] = out[i];
    return rax;
}

/* EREPORT: RBX = TARGETINFO, RCX = REPORTDATA, RDX = REPORT output. */
static inline void sgx_report(const sgx_targetinfo_t *target, const sgx_reportdata_t *data,
                              sgx_report_t *report) {
    __asm__ volatile("enclu" : : "a"(0L), "b"(target), "c"(data), "d"(report) : "memory");
}

/* EACCEPT (SGX2): RBX = SECINFO, RCX = page address; RAX = 0 or an SGX error code. */
static inline long sgx_accept(const sgx_secinfo_t *secinfo, void *page) {
    long rax = 5;
    __asm__ volatile("enclu" : "+a"(rax) : "b"(secinfo), "c"(page) : "memory", "cc");
    return rax;
}

/* EMODPE (SGX2): extend a page's EPCM permissions. */
static inline void sgx_modpe(const sgx_secinfo_t *secinfo, void *page) {
    __asm__ volatile("enclu" : : "a"(6L), "b"(secinfo), "c"(page) : "memory");
}

/* EEXIT to a host address with no return; the ECALL machinery uses its own path. */
__attribute__((noreturn)) void sgx_exit(uint64_t target);

/* ---- the enclave's own identity and memory ---------------------------------------- */
/* This enclave's REPORT targeted at itself (MRENCLAVE, MRSIGNER, attributes, ...). */
void sgx_self_report(sgx_report_t *report);
void *sgx_enclave_base(void);
size_t sgx_enclave_size(void);
int sgx_is_within_enclave(const void *p, size_t n);
int sgx_is_outside_enclave(const void *p, size_t n);
/* Zeroed heap memory that lives until the current ECALL returns (a bump allocator). */
void *sgx_alloc(size_t n);
/* Random bytes from RDRAND; 0 on success. */
int sgx_random(void *buf, size_t n);
/* Overwrite memory in a way the compiler cannot drop. */
void sgx_wipe(void *p, size_t n);

/* ---- OCALLs: leave the enclave (EEXIT), let the host work, come back (EENTER) ------ */
/* Write text to the host's console. */
long sgx_print(const char *text);
/* Call the host function registered as `name` with bytes in; its reply (at most
 * out_cap bytes) is copied into the enclave. Returns the reply length or SGX_ERR_OCALL. */
long sgx_ocall(const char *name, const void *in, size_t in_len, void *out, size_t out_cap);

/* ---- sealing (sgx_seal.c): authenticated encryption under EGETKEY(SEAL_KEY) ------- */
#define SGX_SEAL_OVERHEAD 96
/* Seal in[0..len) to this enclave (SGX_KEYPOLICY_MRENCLAVE) or its signer
 * (SGX_KEYPOLICY_MRSIGNER); returns the sealed size (len + SGX_SEAL_OVERHEAD) or < 0. */
long sgx_seal(uint16_t policy, const void *in, size_t len, void *out, size_t out_cap);
/* Returns the plaintext length, or SGX_ERR_UNSEAL if the blob was altered or the key
 * differs (another enclave, signer, machine or debug state). */
long sgx_unseal(const void *in, size_t len, void *out, size_t out_cap);

/* ---- SHA-512 and HMAC-SHA-512 (sgx_sha512.c) -------------------------------------- */
typedef struct {
    uint64_t h[8];
    uint8_t buf[128];
    uint64_t total;
    size_t used;
} sgx_sha512_t;
void sgx_sha512_init(sgx_sha512_t *c);
void sgx_sha512_update(sgx_sha512_t *c, const void *data, size_t n);
void sgx_sha512_final(sgx_sha512_t *c, uint8_t out[64]);
void sgx_sha512(const void *data, size_t n, uint8_t out[64]);
void sgx_hmac_sha512(const uint8_t *key, size_t key_len, const void *data, size_t n,
                     uint8_t out[64]);

/* ---- freestanding C library subset ------------------------------------------------ */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
/* 0 when equal; the time taken does not depend on the contents. */
int sgx_ct_compare(const void *a, const void *b, size_t n);

#endif
