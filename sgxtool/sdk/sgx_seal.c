/* Sealing: authenticated encryption under a key only this enclave (MRENCLAVE policy) or
 * this signer's enclaves (MRSIGNER policy) can re-derive, on this machine only.
 *
 * Blob: header (64 bytes: "MCSEAL01", policy u16, isvsvn u16, reserved u32, cpusvn[16],
 * keyid[32]) | ciphertext | tag (32 bytes). The header holds what EGETKEY needs to derive
 * the same key again; KEYID is fresh per blob, so every blob gets its own key.
 * Encrypt-then-MAC with HMAC-SHA-512: keystream block i = HMAC(k_enc, i), tag =
 * HMAC(k_mac, header | ciphertext) truncated to 256 bits; k_enc and k_mac are HMACs of
 * fixed labels under the 128-bit seal key. */
#include "enclave.h"

#define HEADER 64
#define TAG 32
static const char MAGIC[8] = "MCSEAL01";

/* Attribute and MISC masks as Intel's SDK sets them for sealing: every flag except
 * MODE64BIT, PROVISIONKEY and EINITTOKEN_KEY; no XFRM; the reserved MISC bits. */
#define SEAL_FLAGS_MASK 0xFFFFFFFFFFFFFFCBull
#define SEAL_MISC_MASK 0xF0000000u

static long derive(const uint8_t *header, uint8_t k_enc[64], uint8_t k_mac[64]) {
    static sgx_keyrequest_t req;
    uint8_t key[16];
    memset(&req, 0, sizeof req);
    req.keyname = SGX_KEY_SEAL;
    memcpy(&req.keypolicy, header + 8, 2);
    memcpy(&req.isvsvn, header + 10, 2);
    memcpy(req.cpusvn, header + 16, 16);
    memcpy(req.keyid, header + 32, 32);
    req.attributemask[0] = SEAL_FLAGS_MASK;
    req.miscmask = SEAL_MISC_MASK;
    if (sgx_getkey(&req, key) != 0) return SGX_ERR_KEY;
    sgx_hmac_sha512(key, 16, "memcrypt seal enc", 17, k_enc);
    sgx_hmac_sha512(key, 16, "memcrypt seal mac", 17, k_mac);
    sgx_wipe(key, sizeof key);
    return 0;
}

static void keystream_xor(const uint8_t k_enc[64], const uint8_t *in, uint8_t *out,
                          size_t n) {
    uint8_t block[64];
    for (uint64_t i = 0; i * 64 < n; i++) {
        sgx_hmac_sha512(k_enc, 64, &i, sizeof i, block);
        for (size_t j = 0; j < 64 && i * 64 + j < n; j++)
            out[i * 64 + j] = in[i * 64 + j] ^ block[j];
    }
    sgx_wipe(block, sizeof block);
}

static void tag_of(const uint8_t k_mac[64], const uint8_t *blob, size_t n, uint8_t out[64]) {
    sgx_hmac_sha512(k_mac, 64, blob, n, out);
}

long sgx_seal(uint16_t policy, const void *in, size_t len, void *out, size_t out_cap) {
    uint8_t *blob = out, k_enc[64], k_mac[64], tag[64];
    static sgx_report_t self;
    if (policy != SGX_KEYPOLICY_MRENCLAVE && policy != SGX_KEYPOLICY_MRSIGNER)
        return SGX_ERR_INVALID_INPUT;
    if (len > out_cap || out_cap - len < SGX_SEAL_OVERHEAD) return SGX_ERR_OUTPUT_TOO_LARGE;
    sgx_self_report(&self);
    memset(blob, 0, HEADER);
    memcpy(blob, MAGIC, 8);
    memcpy(blob + 8, &policy, 2);
    memcpy(blob + 10, &self.isvsvn, 2);
    memcpy(blob + 16, self.cpusvn, 16);
    if (sgx_random(blob + 32, 32)) return SGX_ERR_KEY;
    long r = derive(blob, k_enc, k_mac);
    if (r) return r;
    keystream_xor(k_enc, in, blob + HEADER, len);
    tag_of(k_mac, blob, HEADER + len, tag);
    memcpy(blob + HEADER + len, tag, TAG);
    sgx_wipe(k_enc, 64);
    sgx_wipe(k_mac, 64);
    return (long)(len + SGX_SEAL_OVERHEAD);
}

long sgx_unseal(const void *in, size_t len, void *out, size_t out_cap) {
    const uint8_t *blob = in;
    uint8_t k_enc[64], k_mac[64], tag[64];
    if (len < SGX_SEAL_OVERHEAD || memcmp(blob, MAGIC, 8) != 0) return SGX_ERR_UNSEAL;
    size_t n = len - SGX_SEAL_OVERHEAD;
    if (n > out_cap) return SGX_ERR_OUTPUT_TOO_LARGE;
    if (derive(blob, k_enc, k_mac) != 0) return SGX_ERR_UNSEAL;
    tag_of(k_mac, blob, HEADER + n, tag);
    long r = SGX_ERR_UNSEAL;
    if (sgx_ct_compare(tag, blob + HEADER + n, TAG) == 0) {
        keystream_xor(k_enc, blob + HEADER, out, n);
        r = (long)n;
    }
    sgx_wipe(k_enc, 64);
    sgx_wipe(k_mac, 64);
    return r;
}
