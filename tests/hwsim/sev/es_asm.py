"""SEV-ES test guests in assembly (GNU as): a GDT, an IDT whose vector 29 is a #VC handler
that serves OUT/IN/CPUID through the GHCB, and APs entered from their own VMSA."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.hwsim.sev.guests import GHCB_GPA

AP_ENTRY = 0x800  # offset of the APs' entry in the flat image (see ``SETUP``)
RESULTS = 0x30_0000  # private page where the guests leave what the tests check

# Boot: load a GDT (code 0x08, data 0x10, TSS 0x18 whose IST1 is a stack of its own) and an
# IDT with vector 29 -> the handler named by VC_GATE (an interrupt gate, IST from VC_IST).
SETUP = r"""
.intel_syntax noprefix
.code64
.set GHCB, {ghcb:#x}
.set RESULTS, {results:#x}
.macro vmgexit                       # rep vmmcall, which GNU as will not take
    .byte 0xf3, 0x0f, 0x01, 0xd9
.endm
_start:
    call setup
    mov rbx, 0x3008                  # share the 2 MiB page of the GHCB: clear its C-bit
    mov rax, [rbx]
    btr rax, CBIT
    mov [rbx], rax
    mov rax, cr3
    mov cr3, rax
    jmp main
setup:
    lea rax, [rip + ist1_top]
    mov [rip + tss + 0x24], rax
    lea rax, [rip + gdt]
    mov [rip + gdtr + 2], rax
    lea rax, [rip + tss]            # TSS descriptor base
    mov [rip + gdt + 0x18 + 2], ax
    shr rax, 16
    mov [rip + gdt + 0x18 + 4], al
    mov [rip + gdt + 0x18 + 7], ah
    shr rax, 8
    shr rax, 8
    mov [rip + gdt + 0x18 + 8], eax
    lgdt [rip + gdtr]
    pop rbx                          # our return address, across the CS reload
    push 0x08
    lea rax, [rip + 1f]
    push rax
    retfq
1:  mov ax, 0x10
    mov ss, ax
    mov ds, ax
    mov es, ax
    mov ax, 0x18
    ltr ax
    lea rax, [rip + VC_GATE]
    lea rdi, [rip + idt + 29 * 16]
    mov [rdi], ax
    mov word ptr [rdi + 2], 0x08
    mov byte ptr [rdi + 4], VC_IST
    mov byte ptr [rdi + 5], 0x8e
    shr rax, 16
    mov [rdi + 6], ax
    shr rax, 16
    mov [rdi + 8], eax
    lea rax, [rip + idt]
    mov [rip + idtr + 2], rax
    lidt [rip + idtr]
    jmp rbx

# A minimal #VC handler: OUT dx/imm8, AL; IN AL, dx; CPUID; anything else terminates.
vc_handler:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    mov rdi, GHCB
    mov qword ptr [rdi + 0x3f0], 0
    mov qword ptr [rdi + 0x3f8], 0
    mov rsi, [rsp + 56]              # the faulting instruction
    mov rbx, [rsp + 48]              # error code = exit code
    cmp rbx, 0x72
    je vc_cpuid
    cmp rbx, 0x7b
    jne vc_fail
    movzx eax, byte ptr [rsi]
    cmp al, 0xee
    je vc_out_dx
    cmp al, 0xe6
    je vc_out_imm
    cmp al, 0xec
    je vc_in_dx
    jmp vc_fail
vc_out_dx:
    movzx ecx, word ptr [rsp + 16]
    mov rdx, 1
    jmp vc_out
vc_out_imm:
    movzx ecx, byte ptr [rsi + 1]
    mov rdx, 2
vc_out:
    mov rax, [rsp + 40]
    mov [rdi + 0x1f8], rax
    bts qword ptr [rdi + 0x3f0], 63
    shl rcx, 16
    or rcx, 0x210
    call vc_exit
    add [rsp + 56], rdx
    jmp vc_done
vc_in_dx:
    movzx ecx, word ptr [rsp + 16]
    shl rcx, 16
    or rcx, 0x211
    call vc_exit
    mov al, [rdi + 0x1f8]
    mov [rsp + 40], al
    add qword ptr [rsp + 56], 1
    jmp vc_done
vc_cpuid:
    mov rax, [rsp + 40]
    mov [rdi + 0x1f8], rax
    mov rax, [rsp + 24]
    mov [rdi + 0x308], rax
    bts qword ptr [rdi + 0x3f0], 63
    bts qword ptr [rdi + 0x3f8], 33
    mov rbx, 0x72
    xor ecx, ecx
    call vc_exit
    mov eax, [rdi + 0x1f8]
    mov [rsp + 40], rax
    mov eax, [rdi + 0x318]
    mov [rsp + 32], rax
    mov eax, [rdi + 0x308]
    mov [rsp + 24], rax
    mov eax, [rdi + 0x310]
    mov [rsp + 16], rax
    add qword ptr [rsp + 56], 2
vc_done:
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 8
    iretq
vc_exit:                             # exit code in rbx, info1 in rcx
    mov [rdi + 0x390], rbx
    mov [rdi + 0x398], rcx
    mov qword ptr [rdi + 0x3a0], 0
    mov rax, 7 << 50
    or [rdi + 0x3f8], rax
    mov qword ptr [rdi + 0xff8], 1 << 16
    push rdx
    mov ecx, 0xc0010130
    mov rax, rdi
    xor edx, edx
    wrmsr
    vmgexit
    pop rdx
    ret
vc_fail:
    mov ecx, 0xc0010130
    mov eax, 0x100 | (1 << 12) | (0x7f << 16)
    xor edx, edx
    wrmsr
    vmgexit

# A handler that keeps the #VC frame (and the stack it was pushed on) and halts.
vc_record:
    mov rdi, RESULTS
    mov rcx, 6
    mov rsi, rsp
    rep movsq
    mov [rdi], rsp
    hlt
"""

DATA = r"""
.balign 16
gdt:
    .quad 0
    .quad 0x00af9b000000ffff         # 0x08: 64-bit code
    .quad 0x00cf93000000ffff         # 0x10: data
    .quad 0x0000890000000067         # 0x18: TSS (base patched), 104 bytes
    .quad 0
gdtr:
    .word 5 * 8 - 1
    .quad 0
.balign 16
tss:
    .long 0
    .quad 0, 0, 0                    # RSP0-2
    .quad 0
    .quad 0                          # IST1 (patched)
    .fill 6, 8, 0
    .quad 0
    .word 0, 104
.balign 16
idt:
    .fill 32 * 16, 1, 0
idtr:
    .word 32 * 16 - 1
    .quad 0
.balign 16
    .fill 256, 1, 0
ist1_top:
"""


@functools.cache
def _assemble(source: str) -> bytes:
    tool = shutil.which("as")
    objcopy = shutil.which("objcopy")
    if tool is None or objcopy is None:
        pytest.skip("GNU as and objcopy are needed to build the SEV-ES test guests")
    with tempfile.TemporaryDirectory() as tmp:
        src, obj, out = Path(tmp, "g.s"), Path(tmp, "g.o"), Path(tmp, "g.bin")
        src.write_text(source)
        # Linked where the 4 KiB flat image sits: just below 4 GiB.
        subprocess.run([tool, "--64", "-o", str(obj), str(src)], check=True)
        subprocess.run([objcopy, "-O", "binary", "-j", ".text", str(obj), str(out)], check=True)
        return out.read_bytes()


def es_program(
    main: str, cbit: int, *, gate: str = "vc_handler", ist: int = 0, ap: str = ""
) -> bytes:
    """``SETUP`` + ``main`` (the BSP's code after setup) + ``ap`` at ``AP_ENTRY``."""
    head = SETUP.format(ghcb=GHCB_GPA, results=RESULTS)
    ap_part = f".org {AP_ENTRY:#x}\nap_start:\n{ap}\n" if ap else ""
    consts = f".set VC_GATE, {gate}\n.set VC_IST, {ist}\n.set CBIT, {cbit}\n"
    source = consts + head + "main:\n" + main + "\n" + ap_part + DATA
    code = _assemble(source)
    if len(code) > 4096 - 16:
        raise ValueError("the test guest does not fit its 4 KiB image")
    return code
