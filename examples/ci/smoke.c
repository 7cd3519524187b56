/* smoke: the enclave a release pipeline builds, signs and checks. Its one ECALL, `ping`,
 * answers "pong: " and the input, which proves the signed enclave loads and runs. */
#include <enclave.h>

SGX_ECALL(ping) {
    static const char prefix[] = "pong: ";
    size_t n = sizeof prefix - 1;
    if (n + in_len > out_cap) return SGX_ERR_OUTPUT_TOO_LARGE;
    memcpy(out, prefix, n);
    memcpy(out + n, in, in_len);
    return (long)(n + in_len);
}
