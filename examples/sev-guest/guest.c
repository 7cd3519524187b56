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

/* Ordinary port I/O and CPUID: in the SEV-ES build each one raises #VC. */
static u8 inb(unsigned short port) {
    u8 value;
    __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
    return value;
}

static void outb(unsigned short port, u8 value) {
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static void cpuid(u32 leaf, u32 *eax, u32 *ebx) {
    u32 ecx, edx;
    __asm__ volatile("cpuid" : "=a"(*eax), "=b"(*ebx), "=c"(ecx), "=d"(edx) : "a"(leaf), "c"(0));
}

#ifdef SEV_ES
/* An SEV-ES guest cannot let the host emulate IN, OUT or CPUID: its registers are in its
 * encrypted VMSA. Those instructions raise #VC (vector 29) instead, and this guest's #VC
 * handler asks the host through the GHCB, a page it shares (Linux struct ghcb;
 * sev-guests.md 3.4-3.7): it fills in the exit, marks the fields the host may read valid,
 * writes the GHCB's address to MSR 0xC0010130 and executes VMGEXIT. Before a vCPU has a
 * GHCB, CPUID goes through the GHCB MSR protocol instead (one register per round trip),
 * as Linux's early #VC handler does. */
#define GHCB_BASE 0x200000ul /* the 2 MiB page this guest shares; vCPU n's GHCB at +n pages */
#define GHCB_MSR 0xC0010130u
#define GS_BASE 0xC0000101u
#define MAX_CPUS 64
enum { RAX = 0x1F8, RCX = 0x308, RDX = 0x310, RBX = 0x318, EXIT_CODE = 0x390, INFO1 = 0x398,
       INFO2 = 0x3A0, VALID = 0x3F0 };

struct percpu { volatile u8 *ghcb; u32 apic_id; };
static struct percpu percpu[MAX_CPUS];
static volatile int ghcb_shared, aps_up, serial_lock;

/* What the entry stub pushed, then the #VC frame the CPU pushed. */
struct vc_regs {
    unsigned long r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    unsigned long error_code, rip, cs, rflags, rsp, ss;
};

static unsigned long rdmsr(u32 msr) {
    u32 lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return (unsigned long)hi << 32 | lo;
}

static void wrmsr(u32 msr, unsigned long value) {
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)value), "d"((u32)(value >> 32)) : "memory");
}

static void vmgexit(void) { __asm__ volatile(".byte 0xf3, 0x0f, 0x01, 0xd9" : : : "memory"); }

static __attribute__((noreturn)) void terminate(u8 reason) { /* GHCB MSR protocol 0x100 */
    for (;;) wrmsr(GHCB_MSR, 0x100 | 1u << 12 | (unsigned long)reason << 16), vmgexit();
}

static unsigned long msr_protocol(unsigned long request, unsigned response) {
    wrmsr(GHCB_MSR, request);
    vmgexit();
    unsigned long value = rdmsr(GHCB_MSR);
    if ((value & 0xFFF) != response) terminate(1);
    return value;
}

static struct percpu *this_cpu(void) { return (struct percpu *)rdmsr(GS_BASE); }

static void valid(volatile u8 *ghcb, unsigned off) { ghcb[VALID + off / 64] |= (u8)(1u << (off / 8 % 8)); }

static volatile unsigned long *ghcb_q(volatile u8 *ghcb, unsigned off) {
    return (volatile unsigned long *)(ghcb + off);
}

static void ghcb_exit(volatile u8 *ghcb, unsigned long code, unsigned long info1) {
    *ghcb_q(ghcb, EXIT_CODE) = code, *ghcb_q(ghcb, INFO1) = info1, *ghcb_q(ghcb, INFO2) = 0;
    valid(ghcb, EXIT_CODE), valid(ghcb, INFO1), valid(ghcb, INFO2);
    *(volatile unsigned short *)(ghcb + 0xFFA) = 1; /* protocol version */
    *(volatile u32 *)(ghcb + 0xFFC) = 0;            /* usage */
    wrmsr(GHCB_MSR, (unsigned long)ghcb);
    vmgexit();
    if ((*ghcb_q(ghcb, INFO1) & 0xFFFFFFFF) != 0) terminate(2);
}

static void ghcb_clear(volatile u8 *ghcb) { for (unsigned i = 0; i < 16; i++) ghcb[VALID + i] = 0; }

static void vc_cpuid(struct vc_regs *r) {
    struct percpu *cpu = this_cpu();
    u32 leaf = (u32)r->rax, out[4];
    if (cpu && cpu->ghcb) {
        volatile u8 *g = cpu->ghcb;
        ghcb_clear(g);
        *ghcb_q(g, RAX) = leaf, *ghcb_q(g, RCX) = (u32)r->rcx;
        valid(g, RAX), valid(g, RCX);
        ghcb_exit(g, 0x72, 0);
        out[0] = (u32)*ghcb_q(g, RAX), out[1] = (u32)*ghcb_q(g, RBX);
        out[2] = (u32)*ghcb_q(g, RCX), out[3] = (u32)*ghcb_q(g, RDX);
    } else { /* no GHCB yet: the MSR protocol, register by register (subleaf 0 only) */
        for (unsigned reg = 0; reg < 4; reg++)
            out[reg] = (u32)(msr_protocol((unsigned long)leaf << 32 | reg << 30 | 0x004, 0x005) >> 32);
    }
    r->rax = out[0], r->rbx = out[1], r->rcx = out[2], r->rdx = out[3];
    r->rip += 2;
}

static void vc_ioio(struct vc_regs *r) {
    const u8 *insn = (const u8 *)r->rip;
    unsigned len = 0, wide = 4;
    while (insn[len] == 0x66) wide = 2, len++;
    u8 op = insn[len++];
    unsigned size = op & 1 ? wide : 1;
    unsigned port = (op & 0xF8) == 0xE0 ? insn[len++] : (unsigned)(r->rdx & 0xFFFF);
    int in = !(op & 2);
    unsigned long mask = size == 4 ? 0xFFFFFFFFul : (1ul << (8 * size)) - 1;
    struct percpu *cpu = this_cpu();
    if (!cpu || !cpu->ghcb) terminate(3);
    volatile u8 *g = cpu->ghcb;
    ghcb_clear(g);
    if (!in) *ghcb_q(g, RAX) = r->rax & mask, valid(g, RAX);
    /* SW_EXIT_INFO_1: port, operand size, 64-bit address, IN */
    ghcb_exit(g, 0x7B, (unsigned long)port << 16 | (size == 1 ? 0x10 : size == 2 ? 0x20 : 0x40) |
                       0x200 | (unsigned)in);
    if (in) r->rax = size == 4 ? *ghcb_q(g, RAX) & mask : (r->rax & ~mask) | (*ghcb_q(g, RAX) & mask);
    r->rip += len;
}

void vc_handler(struct vc_regs *r) {
    switch (r->error_code) { /* the SVM exit code of the intercepted instruction */
    case 0x72: vc_cpuid(r); break;
    case 0x7B: vc_ioio(r); break;
    default: terminate(4);
    }
}

/* The #VC entry: save the registers, call vc_handler, restore, drop the error code, IRETQ.
 * The CPU pushed its 6-word frame on a 16-byte boundary, so 15 pushes + 8 align the call. */
__asm__(".text\n"
        "vc_entry:\n"
        "    push %rax\n    push %rbx\n    push %rcx\n    push %rdx\n    push %rsi\n"
        "    push %rdi\n    push %rbp\n    push %r8\n    push %r9\n    push %r10\n"
        "    push %r11\n    push %r12\n    push %r13\n    push %r14\n    push %r15\n"
        "    mov %rsp, %rdi\n    sub $8, %rsp\n    call vc_handler\n    add $8, %rsp\n"
        "    pop %r15\n    pop %r14\n    pop %r13\n    pop %r12\n    pop %r11\n"
        "    pop %r10\n    pop %r9\n    pop %r8\n    pop %rbp\n    pop %rdi\n"
        "    pop %rsi\n    pop %rdx\n    pop %rcx\n    pop %rbx\n    pop %rax\n"
        "    add $8, %rsp\n    iretq\n");
extern const u8 vc_entry[];

/* A GDT (IRETQ reloads CS and SS from it) and an IDT whose only entry is the #VC gate. */
static const unsigned long gdt[3] = {0, 0x00af9b000000ffffull /* 0x08 code */,
                                     0x00cf93000000ffffull /* 0x10 data */};
struct __attribute__((packed)) table_register { unsigned short limit; unsigned long base; };
struct gate { unsigned short lo, selector; u8 ist, type; unsigned short mid; u32 hi, zero; };
static struct gate idt[32];

static void cpu_tables(void) {
    struct table_register gdtr = {sizeof gdt - 1, (unsigned long)gdt};
    __asm__ volatile("lgdt %0\n\tpushq $0x08\n\tleaq 1f(%%rip), %%rax\n\tpushq %%rax\n\tlretq\n"
                     "1:\tmovw $0x10, %%ax\n\tmovw %%ax, %%ss\n\tmovw %%ax, %%ds\n\tmovw %%ax, %%es"
                     : : "m"(gdtr) : "rax", "memory");
    unsigned long handler = (unsigned long)vc_entry; /* every vCPU writes the same gate */
    idt[29] = (struct gate){(unsigned short)handler, 0x08, 0, 0x8E, (unsigned short)(handler >> 16),
                            (u32)(handler >> 32), 0};
    struct table_register idtr = {sizeof idt - 1, (unsigned long)idt};
    __asm__ volatile("lidt %0" : : "m"(idtr) : "memory");
}

/* Each vCPU: tables first (a #VC needs them), then who am I (CPUID leaf 1 through the
 * MSR protocol, as it has no GHCB yet), its per-CPU area in GS base. */
static struct percpu *cpu_init(void) {
    cpu_tables();
    u32 eax, ebx;
    cpuid(1, &eax, &ebx);
    u32 id = ebx >> 24;
    if (id >= MAX_CPUS) terminate(5);
    percpu[id].apic_id = id;
    wrmsr(GS_BASE, (unsigned long)&percpu[id]);
    return &percpu[id];
}

static void use_ghcb(struct percpu *cpu) {
    unsigned long cr3; /* the C-bit of the shared page changed: drop this vCPU's TLB */
    __asm__ volatile("mov %%cr3, %0\n\tmov %0, %%cr3" : "=r"(cr3) : : "memory");
    cpu->ghcb = (volatile u8 *)(GHCB_BASE + cpu->apic_id * 0x1000ul);
}

static void share_ghcb(void) { /* clear the C-bit in the loader's entry, reload CR3 */
    volatile unsigned long *pd = (volatile unsigned long *)0x3000ul;
    pd[1] = GHCB_BASE | 0x83; /* present, writable, 2 MiB, no C-bit */
    use_ghcb(cpu_init());
    ghcb_shared = 1;
}

static void lock_serial(void) { while (__atomic_exchange_n(&serial_lock, 1, __ATOMIC_ACQUIRE)); }
static void unlock_serial(void) { __atomic_store_n(&serial_lock, 0, __ATOMIC_RELEASE); }


static void puts_serial(const char *s);
static void puthex(unsigned long v, int digits);

/* An AP (from its own VMSA, at the SEV-ES reset address in the footer): announce itself
 * on the serial port, then halt for good. */
void ap_main(void) {
    struct percpu *cpu = cpu_init();
    while (!ghcb_shared);
    use_ghcb(cpu);
    lock_serial();
    puts_serial("sev-guest: AP up, APIC id 0x");
    puthex(cpu->apic_id, 2);
    puts_serial("\n");
    unlock_serial();
    __atomic_add_fetch(&aps_up, 1, __ATOMIC_RELEASE);
    for (;;) __asm__ volatile("hlt");
}

static void es_report(void) { /* the host's GHCB protocol range, then wait for the APs */
    unsigned long info = msr_protocol(0x002, 0x001);
    lock_serial();
    puts_serial("sev-guest: GHCB protocol ");
    puthex(info >> 32 & 0xFFFF, 1);
    puts_serial("-");
    puthex(info >> 48, 1);
    puts_serial("\n");
    unlock_serial();
    u32 eax, ebx;
    cpuid(1, &eax, &ebx);
    u32 cpus = ebx >> 16 & 0xFF;
    while (cpus > 1 && aps_up < (int)cpus - 1);
    lock_serial();
    puts_serial("sev-guest: vCPUs up: 0x");
    puthex(cpus ? cpus : 1, 2);
    puts_serial("\n");
    unlock_serial();
}
#else
static void share_ghcb(void) {}
static void es_report(void) {}
static void lock_serial(void) {}
static void unlock_serial(void) {}

void ap_main(void) { for (;;) __asm__ volatile("hlt"); }
#endif

static void putc_serial(char c) {
    while (!(inb(COM1 + 5) & 0x20)); /* transmitter holding register empty */
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
    u32 eax, ebx;
    share_ghcb();
    cpuid(0x8000001F, &eax, &ebx);
    lock_serial();
    puts_serial("sev-guest: memory encryption ");
    puts_serial(eax & 8 ? "SEV-ES" : eax & 2 ? "SEV" : "none");
    puts_serial(", C-bit 0x");
    puthex(ebx & 0x3F, 2);
    puts_serial("\n");
    unlock_serial();
    es_report();
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
 * the SEV-ES reset block (where APs start: the .apreset stub, guest.ld; GUID 00f771de-...),
 * the secret area entry (base, size; GUID 4c2eb361-...), then the footer entry. */
#define AP_RESET 0xFFFFFF80u
struct __attribute__((packed)) footer {
    unsigned short pad; /* the table is read backwards: this keeps its start 4-aligned */
    u32 ap_reset;
    unsigned short ap_reset_len;
    u8 ap_reset_guid[16];
    u32 secret_base, secret_size;
    unsigned short secret_len;
    u8 secret_guid[16];
    unsigned short table_len;
    u8 footer_guid[16];
};
__attribute__((section(".footer"), used, aligned(4))) static const struct footer footer = {
    0, AP_RESET, 4 + 18,
    {0xde, 0x71, 0xf7, 0x00, 0x7e, 0x1a, 0xcb, 0x4f, 0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e},
    SECRET_GPA, SECRET_SIZE, 8 + 18,
    {0x61, 0xb3, 0x2e, 0x4c, 0x9b, 0x7d, 0xc3, 0x4c, 0x80, 0x81, 0x12, 0x7c, 0x90, 0xd3, 0xd2, 0x94},
    sizeof(struct footer) - sizeof(unsigned short), /* the table, not the pad */
    {0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d},
};

/* The reset vector (the last 16 bytes below 4 GiB) and the disk image, made by mkdisk. */
__asm__(".section .apreset, \"ax\"\n"
        "    jmp ap_main\n"
        ".section .reset, \"ax\"\n"
        "    jmp _start\n"
        "    .balign 16, 0xcc\n"
        ".section .rodata.disk, \"a\"\n"
        "disk_image:\n"
        "    .incbin \"" DISK_FILE "\"\n"
        "disk_image_end:\n"
        "    .text\n");
