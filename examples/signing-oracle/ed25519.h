#ifndef ED25519_H
#define ED25519_H
#include <stddef.h>
#include <stdint.h>
/* The public key of a 32-byte secret seed (RFC 8032 5.1.5). */
void ed25519_public_key(uint8_t pub[32], const uint8_t seed[32]);
/* A 64-byte signature of msg (RFC 8032 5.1.6). */
void ed25519_sign(uint8_t sig[64], const uint8_t seed[32], const uint8_t pub[32],
                  const uint8_t *msg, size_t len);
#endif
