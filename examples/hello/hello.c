/* hello: the smallest useful enclave. One ECALL, `hello`, answers with a greeting built
 * from its input; it also says hello on the host console through an OCALL. */
#include <enclave.h>

SGX_ECALL(hello) {
    static const char prefix[] = "Hello, ";
    static const char fallback[] = "world";
    const uint8_t *name = in_len ? in : (const uint8_t *)fallback;
    size_t name_len = in_len ? in_len : sizeof fallback - 1;
    size_t n = sizeof prefix - 1;
    if (n + name_len + 1 > out_cap) return SGX_ERR_OUTPUT_TOO_LARGE;
    memcpy(out, prefix, n);
    memcpy(out + n, name, name_len);
    out[n + name_len] = '!';
    return (long)(n + name_len + 1);
}

/* Echo through the host console: shows an OCALL round trip. */
SGX_ECALL(shout) {
    char line[256];
    size_t n = in_len < sizeof line - 2 ? in_len : sizeof line - 2;
    memcpy(line, in, n);
    line[n] = '\n';
    line[n + 1] = 0;
    long r = sgx_print(line);
    (void)out;
    (void)out_cap;
    return r < 0 ? r : 0;
}
