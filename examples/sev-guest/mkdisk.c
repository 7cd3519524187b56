/* The guest owner's tool: encrypt a message into the guest's "disk" with the disk key.
 *   mkdisk KEYFILE MESSAGEFILE > disk.bin
 * disk.bin = "SEVDISK1" || LE32 length || nonce (12) || ChaCha20(key, nonce, "DISK:" message) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chacha20.h"

static long slurp(const char *path, u8 *buf, long max) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    long n = (long)fread(buf, 1, (size_t)max, f);
    fclose(f);
    return n;
}

int main(int argc, char **argv) {
    static u8 key[33], text[4096 + 5];
    u8 nonce[12] = "sev-guest-1";
    if (argc != 3) { fprintf(stderr, "usage: mkdisk KEYFILE MESSAGEFILE\n"); return 2; }
    if (slurp(argv[1], key, sizeof key) != 32) { fprintf(stderr, "mkdisk: the key must be 32 bytes\n"); return 2; }
    memcpy(text, "DISK:", 5);
    long n = 5 + slurp(argv[2], text + 5, 4096);
    chacha20_xor(key, nonce, text, (unsigned long)n);
    u8 len[4] = {(u8)n, (u8)(n >> 8), (u8)(n >> 16), (u8)(n >> 24)};
    fwrite("SEVDISK1", 1, 8, stdout);
    fwrite(len, 1, 4, stdout);
    fwrite(nonce, 1, 12, stdout);
    fwrite(text, 1, (size_t)n, stdout);
    return 0;
}
