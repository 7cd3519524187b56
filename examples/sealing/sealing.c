/* sealing: keep data across runs, readable only by this enclave or this signer's
 * enclaves, on this machine only.
 *
 *   seal_enclave  data -> blob sealed to MRENCLAVE (this exact build)
 *   seal_signer   data -> blob sealed to MRSIGNER (any enclave this key signed, same
 *                         product id and at least this ISVSVN)
 *   unseal        blob -> data, or SGX_ERR_UNSEAL on another machine, another build
 *                         (MRENCLAVE blobs) or another signer
 * VERSION exists so that a rebuild gives a different MRENCLAVE: make VERSION=2. */
#include <enclave.h>

#ifndef VERSION
#define VERSION 1
#endif

#define STR2(x) #x
#define STR(x) STR2(x)
static const char version[] = "sealing example build " STR(VERSION);

SGX_ECALL(seal_enclave) { return sgx_seal(SGX_KEYPOLICY_MRENCLAVE, in, in_len, out, out_cap); }

SGX_ECALL(seal_signer) { return sgx_seal(SGX_KEYPOLICY_MRSIGNER, in, in_len, out, out_cap); }

SGX_ECALL(unseal) { return sgx_unseal(in, in_len, out, out_cap); }

SGX_ECALL(build) {
    (void)in;
    (void)in_len;
    size_t n = strlen(version);
    if (n > out_cap) return SGX_ERR_OUTPUT_TOO_LARGE;
    memcpy(out, version, n);
    return (long)n;
}
