/* ChaCha20 (RFC 8439 2.3-2.4), freestanding: shared by the guest and mkdisk. */
#ifndef CHACHA20_H
#define CHACHA20_H

typedef unsigned int u32;
typedef unsigned char u8;

#define ROTL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))
#define QR(a, b, c, d)                                                       \
    a += b; d ^= a; d = ROTL(d, 16); c += d; b ^= c; b = ROTL(b, 12);        \
    a += b; d ^= a; d = ROTL(d, 8);  c += d; b ^= c; b = ROTL(b, 7)

static u32 le32(const u8 *p) {
    return (u32)p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24;
}

/* XOR len bytes of data with the ChaCha20 key stream (key 32 bytes, nonce 12 bytes). */
static void chacha20_xor(const u8 *key, const u8 *nonce, u8 *data, unsigned long len) {
    u32 in[16], x[16];
    static const u8 sigma[16] = "expand 32-byte k";
    for (int i = 0; i < 4; i++) in[i] = le32(sigma + 4 * i);
    for (int i = 0; i < 8; i++) in[4 + i] = le32(key + 4 * i);
    in[12] = 1; /* RFC 8439: the first block of the key stream for data has counter 1 */
    for (int i = 0; i < 3; i++) in[13 + i] = le32(nonce + 4 * i);
    for (unsigned long at = 0; at < len; at += 64, in[12]++) {
        for (int i = 0; i < 16; i++) x[i] = in[i];
        for (int r = 0; r < 10; r++) {
            QR(x[0], x[4], x[8], x[12]); QR(x[1], x[5], x[9], x[13]);
            QR(x[2], x[6], x[10], x[14]); QR(x[3], x[7], x[11], x[15]);
            QR(x[0], x[5], x[10], x[15]); QR(x[1], x[6], x[11], x[12]);
            QR(x[2], x[7], x[8], x[13]); QR(x[3], x[4], x[9], x[14]);
        }
        for (int i = 0; i < 64 && at + i < len; i++) {
            u32 word = x[i / 4] + in[i / 4];
            data[at + i] ^= (u8)(word >> (8 * (i % 4)));
        }
    }
}

#endif
