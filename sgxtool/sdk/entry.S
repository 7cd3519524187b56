/* memcrypt enclave entry stub: EENTER lands here (TCS.OENTRY = e_entry = _start).
 *
 * Register protocol, host to enclave (EENTER sets RAX = CSSA, RCX = return address):
 *   RDI  ECALL index, or SGX_OCALL_RETURN (-1) to resume a pending OCALL
 *   RSI  input buffer (host memory)   RDX  its length        (OCALL return: RSI = result)
 *   R8   output buffer (host memory)  R9   its capacity
 *   R10  host scratch buffer for OCALL requests and replies, R11 its size
 * Enclave to host (EEXIT to the address EENTER gave in RCX):
 *   RDI  0 = ECALL finished, RSI = result (output length or a negative SGX_ERR_*)
 *   RDI  1 = OCALL request, RSI = OCALL number, RDX = request length in the scratch buffer
 * Every other general register and all vector registers are cleared before EEXIT, so
 * no enclave secret leaves in a register (SDM EEXIT: that is the enclave's job).
 *
 * The thread-data page (GS base, set by EENTER from TCS.OGSBASE) starts with offsets
 * from the enclave base (sgxtool.layout.THREAD_DATA); from 0x40 it is stub scratch. */

#define TD_STACK_TOP     0x00
#define TD_HOST_RET      0x40
#define TD_SCRATCH       0x48
#define TD_SCRATCH_SIZE  0x50
#define TD_OCALL_RSP     0x58
#define TD_OCALL_PENDING 0x60
#define SGX_OCALL_RETURN -1
#define EEXIT            4

    .section .text.sgx_entry,"ax",@progbits
    .globl _start
    .type _start,@function
_start:
    test %rax, %rax                 /* CSSA != 0: entered after an exception, refused */
    jnz .Lrefuse_no_stack
    mov %rcx, %gs:TD_HOST_RET
    mov %r10, %gs:TD_SCRATCH
    mov %r11, %gs:TD_SCRATCH_SIZE
    cld
    cmp $SGX_OCALL_RETURN, %rdi
    je .Locall_return
    cmpq $0, %gs:TD_OCALL_PENDING   /* a new ECALL while an OCALL is pending would */
    jne .Lrefuse_no_stack           /* reuse the stack under the waiting frame */
    lea __ehdr_start(%rip), %rax    /* the enclave base: offset 0 is the ELF header */
    mov %gs:TD_STACK_TOP, %rsp
    add %rax, %rsp
    and $-16, %rsp
    mov %r8, %rcx                   /* C arguments: index, in, in_len, out, out_cap */
    mov %r9, %r8
    call __sgx_ecall
    mov %rax, %rsi
    xor %edi, %edi
    jmp __sgx_eexit

.Locall_return:
    cmpq $1, %gs:TD_OCALL_PENDING
    jne .Lrefuse_no_stack
    movq $0, %gs:TD_OCALL_PENDING
    mov %gs:TD_OCALL_RSP, %rsp
    mov %rsi, %rax                  /* the OCALL's result */
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret                             /* back into __sgx_ocall_raw's caller */

.Lrefuse_no_stack:
    mov $-5, %rsi                   /* SGX_ERR_BAD_ENTRY */
    xor %edi, %edi
    jmp __sgx_eexit
    .size _start, .-_start

/* long __sgx_ocall_raw(uint64_t number, uint64_t request_len): the request is already in
 * the host scratch buffer; returns the host's result when the host resumes us. */
    .globl __sgx_ocall_raw
    .type __sgx_ocall_raw,@function
__sgx_ocall_raw:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %gs:TD_OCALL_RSP
    movq $1, %gs:TD_OCALL_PENDING
    mov %rsi, %rdx
    mov %rdi, %rsi
    mov $1, %edi
    jmp __sgx_eexit
    .size __sgx_ocall_raw, .-__sgx_ocall_raw

/* EEXIT keeping RDI, RSI, RDX; everything else cleared. */
    .globl __sgx_eexit
    .type __sgx_eexit,@function
__sgx_eexit:
    xor %ecx, %ecx
    xor %ebp, %ebp
    xor %r8d, %r8d
    xor %r9d, %r9d
    xor %r10d, %r10d
    xor %r11d, %r11d
    xor %r12d, %r12d
    xor %r13d, %r13d
    xor %r14d, %r14d
    xor %r15d, %r15d
    pxor %xmm0, %xmm0
    pxor %xmm1, %xmm1
    pxor %xmm2, %xmm2
    pxor %xmm3, %xmm3
    pxor %xmm4, %xmm4
    pxor %xmm5, %xmm5
    pxor %xmm6, %xmm6
    pxor %xmm7, %xmm7
    pxor %xmm8, %xmm8
    pxor %xmm9, %xmm9
    pxor %xmm10, %xmm10
    pxor %xmm11, %xmm11
    pxor %xmm12, %xmm12
    pxor %xmm13, %xmm13
    pxor %xmm14, %xmm14
    pxor %xmm15, %xmm15
    xor %esp, %esp                  /* the host stack is the host's business */
    mov %gs:TD_HOST_RET, %rbx
    mov $EEXIT, %eax
    add $0, %eax                    /* clears the arithmetic flags */
    enclu
    ud2
    .size __sgx_eexit, .-__sgx_eexit

/* void sgx_exit(uint64_t target): leave for good; the host sees a bare EEXIT. */
    .globl sgx_exit
    .type sgx_exit,@function
sgx_exit:
    mov %rdi, %rbx
    mov $EEXIT, %eax
    enclu
    ud2
    .size sgx_exit, .-sgx_exit

    .section .note.GNU-stack,"",@progbits
