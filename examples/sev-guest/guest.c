/* A freestanding SEV guest for hwsim (boot contract: hwsim/sev/guest.py).
 *
 * It comes out of reset in 64-bit mode at 0xFFFFFFF0 with identity-mapped private page
 * tables and a stack at the top of RAM. It reads the disk key its owner injected as a
 * launch secret (an OVMF-style secret table at the address its footer names), decrypts
 * its disk image with it and prints the plaintext on COM1; then it powers off through
 * port 0xF4 (exit code 0 on success). */
#include "chacha20.h"

#define SECRET_GPA 0x800000u /* the secret area this image's footer advertises */
#define SECRET_SIZE 0x1000u
#define COM1 0x3F8
#define EXIT_PORT 0xF4

static void outb(unsigned short port, u8 value) {
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static void putc_serial(char c) {
    u8 lsr;
    do __asm__ volatile("inb %1, %0" : "=a"(lsr) : "Nd"((unsigned short)(COM1 + 5)));
    while (!(lsr & 0x20)); /* transmitter holding register empty */
    outb(COM1, (u8)c);
}

static void puts_serial(const char *s) { while (*s) putc_serial(*s++); }

static void puthex(unsigned long v, int digits) {
    while (digits--) putc_serial("0123456789abcdef"[(v >> (4 * digits)) & 0xF]);
}

static __attribute__((noreturn)) void power_off(u8 code) {
    for (;;) outb(EXIT_PORT, code);
}

static int same(const u8 *a, const u8 *b, unsigned long n) {
    while (n--) if (*a++ != *b++) return 0;
    return 1;
}

/* EFI GUIDs as stored (mixed endian): the secret table header and the disk passphrase
 * entry (GRUB's diskpasswd, libvirt's luks-key). */
static const u8 TABLE_GUID[16] = {0x42, 0xf5, 0x74, 0x1e, 0xdd, 0x71, 0x66, 0x4d,
                                  0x96, 0x3e, 0xef, 0x42, 0x87, 0xff, 0x17, 0x3b};
static const u8 DISK_GUID[16] = {0xe5, 0x69, 0x68, 0x73, 0xf0, 0x84, 0x73, 0x49,
                                 0x92, 0xec, 0x06, 0x87, 0x9c, 0xe3, 0xda, 0x0b};

/* The disk key from the launch secret, or 0 (secret table: sev.md 2.5). */
static const u8 *disk_key(void) {
    const u8 *table = (const u8 *)(unsigned long)SECRET_GPA;
    if (!same(table, TABLE_GUID, 16)) return 0;
    u32 total = le32(table + 16);
    if (total > SECRET_SIZE) return 0;
    for (u32 at = 20; at + 20 <= total;) {
        u32 len = le32(table + at + 16);
        if (len < 20 || at + len > total) return 0;
        if (same(table + at, DISK_GUID, 16) && len == 20 + 32) return table + at + 20;
        at += len;
    }
    return 0;
}

extern const u8 disk_image[], disk_image_end[];
static u8 plain[4096 + 8];

void _start(void) {
    u32 eax, ebx, ecx, edx;
    __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(0x8000001F), "c"(0));
    puts_serial("sev-guest: memory encryption ");
    puts_serial(eax & 2 ? "SEV" : "none");
    puts_serial(", C-bit 0x");
    puthex(ebx & 0x3F, 2);
    puts_serial("\n");
    const u8 *key = disk_key();
    if (!key) {
        puts_serial("sev-guest: no disk key in the launch secret\n");
        power_off(1);
    }
    u32 len = le32(disk_image + 8);
    if (!same(disk_image, (const u8 *)"SEVDISK1", 8) || len > 4096 ||
        disk_image + 24 + len > disk_image_end) {
        puts_serial("sev-guest: the disk image is damaged\n");
        power_off(2);
    }
    for (u32 i = 0; i < len; i++) plain[i] = disk_image[24 + i];
    chacha20_xor(key, disk_image + 12, plain, len);
    if (!same(plain, (const u8 *)"DISK:", 5)) {
        puts_serial("sev-guest: the disk key does not open the disk\n");
        power_off(3);
    }
    puts_serial("sev-guest: disk unlocked: ");
    for (u32 i = 5; i < len; i++) putc_serial((char)plain[i]);
    power_off(0);
}

/* OVMF-style footer table, ending 32 bytes before 4 GiB (QEMU docs/specs/sev-guest-firmware):
 * the secret area entry (base, size; GUID 4c2eb361-...) then the footer entry. */
struct __attribute__((packed)) footer {
    u32 secret_base, secret_size;
    unsigned short secret_len;
    u8 secret_guid[16];
    unsigned short table_len;
    u8 footer_guid[16];
};
__attribute__((section(".footer"), used, aligned(4))) static const struct footer footer = {
    SECRET_GPA, SECRET_SIZE, 8 + 18,
    {0x61, 0xb3, 0x2e, 0x4c, 0x9b, 0x7d, 0xc3, 0x4c, 0x80, 0x81, 0x12, 0x7c, 0x90, 0xd3, 0xd2, 0x94},
    sizeof(struct footer),
    {0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d},
};

/* The reset vector (the last 16 bytes below 4 GiB) and the disk image, made by mkdisk. */
__asm__(".section .reset, \"ax\"\n"
        "    jmp _start\n"
        "    .balign 16, 0xcc\n"
        ".section .rodata.disk, \"a\"\n"
        "disk_image:\n"
        "    .incbin \"" DISK_FILE "\"\n"
        "disk_image_end:\n"
        "    .text\n");
