/* signing-oracle: an Ed25519 key that exists only inside the enclave.
 *
 * `generate` makes a key from RDRAND and returns it sealed to this enclave (MRENCLAVE
 * policy) for the host to store; `load` takes that blob back after a restart; `public_key`
 * and `sign` use the key. The host never gets the seed: not through an ECALL, not through
 * its memory, not by reading the EPC (ciphertext, or the abort page for host loads). */
#include <enclave.h>

#include "ed25519.h"

static uint8_t seed[32]; /* the secret */
static uint8_t pub[32];
static int have_key;

static void set_key(const uint8_t s[32]) {
    memcpy(seed, s, 32);
    ed25519_public_key(pub, seed);
    have_key = 1;
}

SGX_ECALL(generate) {
    uint8_t fresh[32];
    (void)in;
    (void)in_len;
    if (sgx_random(fresh, sizeof fresh)) return SGX_ERR_KEY;
    set_key(fresh);
    sgx_wipe(fresh, sizeof fresh);
    return sgx_seal(SGX_KEYPOLICY_MRENCLAVE, seed, sizeof seed, out, out_cap);
}

SGX_ECALL(load) {
    uint8_t s[32];
    long n = sgx_unseal(in, in_len, s, sizeof s);
    if (n < 0) return n;
    if (n != 32) return SGX_ERR_INVALID_INPUT;
    set_key(s);
    sgx_wipe(s, sizeof s);
    if (out_cap < 32) return SGX_ERR_OUTPUT_TOO_LARGE;
    memcpy(out, pub, 32);
    return 32;
}

SGX_ECALL(public_key) {
    (void)in;
    (void)in_len;
    if (!have_key) return SGX_ERR_INVALID_INPUT;
    if (out_cap < 32) return SGX_ERR_OUTPUT_TOO_LARGE;
    memcpy(out, pub, 32);
    return 32;
}

SGX_ECALL(sign) {
    if (!have_key) return SGX_ERR_INVALID_INPUT;
    if (out_cap < 64) return SGX_ERR_OUTPUT_TOO_LARGE;
    ed25519_sign(out, seed, pub, in, in_len);
    return 64;
}
