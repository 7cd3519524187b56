/* Ed25519 signatures (RFC 8032, section 5.1) for the signing oracle, written for this
 * example: field arithmetic mod 2^255-19 in five 51-bit limbs, points in extended
 * twisted-Edwards coordinates, scalars mod L reduced bit by bit. Scalar multiplication
 * does the same work for every key bit (no branch on secret bits). */
#include <enclave.h>

#include "ed25519.h"

typedef uint64_t fe[5];
typedef unsigned __int128 u128;
typedef struct { fe x, y, z, t; } point;

#define MASK51 0x7ffffffffffffULL

static const fe D2 = {0x69b9426b2f159, 0x35050762add7a, 0x3cf44c0038052, 0x6738cc7407977,
                      0x2406d9dc56dff};
static const point BASE = {
    {0x62d608f25d51a, 0x412a4b4f6592a, 0x75b7171a4b31d, 0x1ff60527118fe, 0x216936d3cd6e5},
    {0x6666666666658, 0x4cccccccccccc, 0x1999999999999, 0x3333333333333, 0x6666666666666},
    {1, 0, 0, 0, 0},
    {0x68ab3a5b7dda3, 0xeea2a5eadbb, 0x2af8df483c27e, 0x332b375274732, 0x67875f0fd78b7}};
/* L = 2^252 + 27742317777372353535851937790883648493, little-endian 64-bit words */
static const uint64_t L[4] = {0x5812631a5cf5d3ed, 0x14def9dea2f79cd6, 0, 0x1000000000000000};

static void fe_copy(fe r, const fe a) { for (int i = 0; i < 5; i++) r[i] = a[i]; }

static void fe_carry(fe r) {
    for (int i = 0; i < 4; i++) { r[i + 1] += r[i] >> 51; r[i] &= MASK51; }
    r[0] += 19 * (r[4] >> 51);
    r[4] &= MASK51;
}

static void fe_add(fe r, const fe a, const fe b) {
    for (int i = 0; i < 5; i++) r[i] = a[i] + b[i];
    fe_carry(r);
}

/* a - b + 4p keeps every limb positive */
static void fe_sub(fe r, const fe a, const fe b) {
    static const uint64_t P4[5] = {0x1fffffffffffb4, 0x1ffffffffffffc, 0x1ffffffffffffc,
                                   0x1ffffffffffffc, 0x1ffffffffffffc};
    for (int i = 0; i < 5; i++) r[i] = a[i] + P4[i] - b[i];
    fe_carry(r);
}

static void fe_mul(fe r, const fe a, const fe b) {
    u128 t[5] = {0};
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++) {
            u128 m = (u128)a[i] * b[j];
            if (i + j < 5) t[i + j] += m;
            else t[i + j - 5] += m * 19; /* 2^255 = 19 mod p */
        }
    for (int i = 0; i < 4; i++) { t[i + 1] += t[i] >> 51; t[i] &= MASK51; }
    t[0] += 19 * (t[4] >> 51); /* still 128-bit: the top carry can exceed 2^59 */
    t[4] &= MASK51;
    t[1] += t[0] >> 51;
    t[0] &= MASK51;
    for (int i = 0; i < 5; i++) r[i] = (uint64_t)t[i];
    fe_carry(r);
}

static void fe_invert(fe r, const fe a) { /* a^(p-2), p-2 = 2^255 - 21 */
    fe acc = {1, 0, 0, 0, 0}, base;
    fe_copy(base, a);
    for (int bit = 0; bit < 255; bit++) {
        int set = bit != 2 && bit != 4; /* 2^255-21: every bit of 0..254 but bits 2 and 4 */
        if (set) fe_mul(acc, acc, base);
        fe_mul(base, base, base);
    }
    fe_copy(r, acc);
}

static void fe_tobytes(uint8_t out[32], const fe a) {
    fe t;
    fe_copy(t, a);
    fe_carry(t);
    fe_carry(t);
    /* subtract p if t >= p: add 19 and look at bit 255 */
    uint64_t q = (t[0] + 19) >> 51;
    q = (t[1] + q) >> 51; q = (t[2] + q) >> 51; q = (t[3] + q) >> 51; q = (t[4] + q) >> 51;
    t[0] += 19 * q;
    for (int i = 0; i < 4; i++) { t[i + 1] += t[i] >> 51; t[i] &= MASK51; }
    t[4] &= MASK51;
    uint64_t w[4] = {t[0] | t[1] << 51, t[1] >> 13 | t[2] << 38, t[2] >> 26 | t[3] << 25,
                     t[3] >> 39 | t[4] << 12};
    for (int i = 0; i < 32; i++) out[i] = (uint8_t)(w[i / 8] >> (8 * (i % 8)));
}

static void point_add(point *r, const point *p, const point *q) {
    fe a, b, c, d, e, f, g, h, t;
    fe_sub(a, p->y, p->x); fe_sub(t, q->y, q->x); fe_mul(a, a, t);
    fe_add(b, p->y, p->x); fe_add(t, q->y, q->x); fe_mul(b, b, t);
    fe_mul(c, p->t, q->t); fe_mul(c, c, D2);
    fe_mul(d, p->z, q->z); fe_add(d, d, d);
    fe_sub(e, b, a); fe_sub(f, d, c); fe_add(g, d, c); fe_add(h, b, a);
    fe_mul(r->x, e, f); fe_mul(r->y, g, h); fe_mul(r->t, e, h); fe_mul(r->z, f, g);
}

static void point_select(point *r, const point *a, const point *b, uint64_t pick_b) {
    uint64_t m = 0 - pick_b; /* all ones picks b */
    for (int i = 0; i < 5; i++) {
        r->x[i] = (a->x[i] & ~m) | (b->x[i] & m);
        r->y[i] = (a->y[i] & ~m) | (b->y[i] & m);
        r->z[i] = (a->z[i] & ~m) | (b->z[i] & m);
        r->t[i] = (a->t[i] & ~m) | (b->t[i] & m);
    }
}

/* r = s * BASE, s a 32-byte little-endian scalar */
static void scalarmult_base(point *r, const uint8_t s[32]) {
    point acc = {{0}, {1}, {1}, {0}}, sum;
    for (int bit = 255; bit >= 0; bit--) {
        point_add(&acc, &acc, &acc);
        point_add(&sum, &acc, &BASE);
        point_select(&acc, &acc, &sum, (s[bit / 8] >> (bit % 8)) & 1);
    }
    *r = acc;
}

static void point_encode(uint8_t out[32], const point *p) {
    fe zi, x, y;
    uint8_t xb[32];
    fe_invert(zi, p->z);
    fe_mul(x, p->x, zi);
    fe_mul(y, p->y, zi);
    fe_tobytes(out, y);
    fe_tobytes(xb, x);
    out[31] |= (uint8_t)((xb[0] & 1) << 7);
}

/* ---- scalars mod L ----------------------------------------------------------------- */
static int geq_l(const uint64_t r[4]) {
    for (int i = 3; i >= 0; i--)
        if (r[i] != L[i]) return r[i] > L[i];
    return 1;
}

static void sub_l(uint64_t r[4]) {
    uint64_t borrow = 0;
    for (int i = 0; i < 4; i++) {
        u128 d = (u128)r[i] - L[i] - borrow;
        r[i] = (uint64_t)d;
        borrow = (uint64_t)(d >> 64) & 1;
    }
}

/* n (words little-endian, count words) mod L, one bit at a time: r = 2r + bit. */
static void reduce(uint64_t r[4], const uint64_t *n, int words) {
    r[0] = r[1] = r[2] = r[3] = 0;
    for (int bit = words * 64 - 1; bit >= 0; bit--) {
        r[3] = r[3] << 1 | r[2] >> 63;
        r[2] = r[2] << 1 | r[1] >> 63;
        r[1] = r[1] << 1 | r[0] >> 63;
        r[0] = r[0] << 1 | ((n[bit / 64] >> (bit % 64)) & 1);
        if (geq_l(r)) sub_l(r); /* r < 2L < 2^254 never overflows */
    }
}

static void words_of(uint64_t *w, const uint8_t *b, int words) {
    for (int i = 0; i < words; i++) {
        w[i] = 0;
        for (int j = 7; j >= 0; j--) w[i] = w[i] << 8 | b[8 * i + j];
    }
}

static void bytes_of(uint8_t out[32], const uint64_t w[4]) {
    for (int i = 0; i < 32; i++) out[i] = (uint8_t)(w[i / 8] >> (8 * (i % 8)));
}

/* out = (r + k * a) mod L */
static void muladd(uint8_t out[32], const uint64_t k[4], const uint64_t a[4],
                   const uint64_t r[4]) {
    uint64_t prod[9] = {0}, res[4];
    for (int i = 0; i < 4; i++) {
        u128 carry = 0;
        for (int j = 0; j < 4; j++) {
            u128 t = (u128)k[i] * a[j] + prod[i + j] + carry;
            prod[i + j] = (uint64_t)t;
            carry = t >> 64;
        }
        prod[i + 4] = (uint64_t)carry;
    }
    u128 c = 0;
    for (int i = 0; i < 9; i++) {
        c += (u128)prod[i] + (i < 4 ? r[i] : 0);
        prod[i] = (uint64_t)c;
        c >>= 64;
    }
    reduce(res, prod, 9);
    bytes_of(out, res);
}

/* ---- RFC 8032 5.1.5-5.1.6 ---------------------------------------------------------- */
static void expand(const uint8_t seed[32], uint8_t a[32], uint8_t prefix[32]) {
    uint8_t h[64];
    sgx_sha512(seed, 32, h);
    memcpy(a, h, 32);
    memcpy(prefix, h + 32, 32);
    a[0] &= 248;
    a[31] &= 127;
    a[31] |= 64;
    sgx_wipe(h, sizeof h);
}

void ed25519_public_key(uint8_t pub[32], const uint8_t seed[32]) {
    uint8_t a[32], prefix[32];
    point A;
    expand(seed, a, prefix);
    scalarmult_base(&A, a);
    point_encode(pub, &A);
    sgx_wipe(a, 32);
    sgx_wipe(prefix, 32);
}

static void hash_mod_l(uint64_t out[4], const void *p1, size_t n1, const void *p2, size_t n2,
                       const void *p3, size_t n3) {
    sgx_sha512_t c;
    uint8_t h[64];
    uint64_t w[8];
    sgx_sha512_init(&c);
    sgx_sha512_update(&c, p1, n1);
    sgx_sha512_update(&c, p2, n2);
    sgx_sha512_update(&c, p3, n3);
    sgx_sha512_final(&c, h);
    words_of(w, h, 8);
    reduce(out, w, 8);
}

void ed25519_sign(uint8_t sig[64], const uint8_t seed[32], const uint8_t pub[32],
                  const uint8_t *msg, size_t len) {
    uint8_t a[32], prefix[32], rb[32];
    uint64_t r[4], k[4], aw[4];
    point R;
    expand(seed, a, prefix);
    hash_mod_l(r, prefix, 32, msg, len, 0, 0);
    bytes_of(rb, r);
    scalarmult_base(&R, rb);
    point_encode(sig, &R);
    hash_mod_l(k, sig, 32, pub, 32, msg, len);
    words_of(aw, a, 4);
    muladd(sig + 32, k, aw, r);
    sgx_wipe(a, 32);
    sgx_wipe(prefix, 32);
    sgx_wipe(rb, 32);
    sgx_wipe(r, sizeof r);
    sgx_wipe(aw, sizeof aw);
}
