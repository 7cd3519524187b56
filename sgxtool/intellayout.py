"""The memory layout ``sgx_sign`` writes into an Intel SDK enclave's metadata.

From the XML's values and a few facts of the ELF this module builds, as the signer of the
enclave's SDK release does, the layout table (heap, then per thread guard/stack/TCS/SSA/
guard/thread data, grouped), the TCS template, the ``g_global_data`` template the tRTS
reads at start-up, the patch table, the ``metadata_t`` copy and the older copies the
release appends for older loaders. Facts: linux-sgx ``sdk/sign_tool/SignTool/
manage_metadata.cpp`` (``build_layout_table``, ``update_layout_entries``,
``build_layout_entries``, ``build_tcs_template``, ``build_patch_table``,
``build_gd_template``), ``psw/urts/parser/update_global_data.hxx`` and ``sign_tool.cpp``
(``generate_compatible_metadata``, ``metadata_cleanup``) at the release tag;
``shared/reference/intel-sdk.md`` 1.2-1.5.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from hwsim.sgx.arch import PAGE_SIZE, Sigstruct, Tcs
from sgxtool.config import MAX_ENCLAVE_SIZE
from sgxtool.errors import ConfigError
from sgxtool.intelsdk import SdkProfile
from sgxtool.intelxml import SignConfig

__all__ = ["ElfFacts", "Record", "build_metadata", "compat_copies"]

METADATA_MAGIC = 0x86A80294635D0E4C
_HEADER = struct.Struct("<QQIIIIIIQQQ")  # metadata_t up to enclave_css
_DIRS_AT = 64 + Sigstruct.LAYOUT.size
_DATA_AT = _DIRS_AT + 2 * 8  # two data_directory_t: PATCH, LAYOUT
_ENTRY = struct.Struct("<HHIQIIQ")  # layout_entry_t
_GROUP = struct.Struct("<HHIQ16x")  # layout_group_t
_PATCH = struct.Struct("<QII16x")  # patch_entry_t
_U32, _U64 = 0xFFFF_FFFF, (1 << 64) - 1
# layout ids (metadata.h) and ops (se_page_attr.h), SDK 2.0 and later
HEAP_MIN, HEAP_INIT, HEAP_MAX, TCS, TD, SSA, STACK_MAX, STACK_MIN = 1, 2, 3, 4, 5, 6, 7, 8
GUARD = 10
DYN = 10  # a dynamic thread's records: id + 10
STACK_DYN_MAX, STACK_DYN_MIN = STACK_MAX + DYN, STACK_MIN + DYN
THREAD_GROUP, THREAD_GROUP_DYN = 0x1009, 0x1013
EADD, EEXTEND, EREMOVE, POST_ADD, POST_REMOVE, DYN_THREAD, GROW_DOWN = 1, 2, 4, 8, 0x10, 0x20, 0x40
SI_RW, SI_TCS = 0x203, 0x100
_GUARD_PAGES = 16  # SE_GUARD_PAGE_SIZE, 64 KiB
_TCS_TEMPLATE = 72
_SSA_FRAME_SIZE, _SSA_NUM = 1, 2
_MAX_SAVE_BUF = 2632
_SSA_GPR = 184  # sizeof(ssa_gpr_t)
_STACK_FILL = 0xCCCCCCCC
_TD_SIZE, _TCS_IN_GD, _TD_TLS_ADDR = 160, 72, 80  # thread_data_t; tls_addr's offset in it


@dataclass(frozen=True)
class ElfFacts:
    """What the layout needs from the unsigned ``.so``."""

    end: int  # the page-rounded end of the PT_LOAD with the highest address
    tls_size: int  # PT_TLS p_memsz, 0 without TLS
    entry: int  # enclave_entry
    global_data_offset: int  # file offset of g_global_data


@dataclass(frozen=True)
class Record:
    """A layout_entry_t, or a layout_group_t when ``id`` has bit 0x1000."""

    id: int
    ops: int = 0
    pages: int = 0
    rva: int = 0
    content_size: int = 0
    content_offset: int = 0
    si_flags: int = 0
    count: int = 0  # group: how many preceding records it repeats
    times: int = 0
    step: int = 0

    @property
    def group(self) -> bool:
        return bool(self.id & 0x1000)

    def pack(self) -> bytes:
        if self.group:
            return _GROUP.pack(self.id, self.count, self.times, self.step)
        return _ENTRY.pack(self.id, self.ops, self.pages, self.rva, self.content_size,
                           self.content_offset, self.si_flags)  # fmt: skip


def _thread(tcs_at: int, cfg: SignConfig, tls_size: int) -> list[Record]:
    """guard | stack max | stack min | guard | TCS | SSA | guard | thread data."""
    guard = Record(GUARD, pages=_GUARD_PAGES)
    grow = (cfg.stack_max - cfg.stack_min) // PAGE_SIZE
    stack = [Record(STACK_MAX, EADD | EEXTEND | GROW_DOWN, grow, content_size=_STACK_FILL,
                    si_flags=SI_RW)] if grow else []  # fmt: skip
    return [guard, *stack,
            Record(STACK_MIN, EADD | EEXTEND, cfg.stack_min // PAGE_SIZE, content_size=_STACK_FILL,
                   si_flags=SI_RW),
            guard,
            Record(TCS, EADD | EEXTEND, 1, content_size=_TCS_TEMPLATE, content_offset=tcs_at,
                   si_flags=SI_TCS),
            Record(SSA, EADD | EEXTEND, _SSA_FRAME_SIZE * _SSA_NUM, si_flags=SI_RW),
            guard,
            Record(TD, EADD | EEXTEND, 1 + -(-tls_size // PAGE_SIZE), si_flags=SI_RW)]  # fmt: skip


def _records(p: SdkProfile, cfg: SignConfig, tcs_at: int, tls_size: int) -> list[Record]:
    """build_layout_table, before addresses are assigned."""
    out = [Record(HEAP_MIN, EADD, cfg.heap_min // PAGE_SIZE, si_flags=SI_RW)]
    if cfg.heap_init > cfg.heap_min:
        out.append(Record(HEAP_INIT, EADD | POST_REMOVE | POST_ADD,
                          (cfg.heap_init - cfg.heap_min) // PAGE_SIZE, si_flags=SI_RW))  # fmt: skip
    if cfg.heap_max > cfg.heap_init:
        out.append(Record(HEAP_MAX, POST_ADD, (cfg.heap_max - cfg.heap_init) // PAGE_SIZE,
                          si_flags=SI_RW))  # fmt: skip
    thread = _thread(tcs_at, cfg, tls_size)
    grows = POST_ADD | POST_REMOVE if p.utility_stack_grows else 0
    out += [replace(r, ops=r.ops | grows) if r.id == STACK_MAX else r for r in thread]
    min_pool = min(cfg.tcs_min_pool, cfg.tcs_num - 1)
    eremove = cfg.tcs_num - 1 - min_pool
    if min_pool and not p.utility_stack_grows:  # SDK 2.0: the utility thread, repeated
        out.append(Record(THREAD_GROUP, count=len(thread), times=min_pool))
    elif min_pool:
        out += thread
        if min_pool > 1:
            out.append(Record(THREAD_GROUP, count=len(thread), times=min_pool - 1))
    if eremove:
        out += [r if r.id == GUARD else replace(r, ops=r.ops | EREMOVE) for r in thread]
        if eremove > 1:
            out.append(Record(THREAD_GROUP, count=len(thread), times=eremove - 1))
    if cfg.tcs_max_num > min_pool + 1:
        out += [_dynamic(r) for r in thread]
        # SDK 2.0 compares with the XML's TCSMinPool here, later releases do not
        if p.utility_stack_grows or cfg.tcs_max_num > cfg.tcs_min_pool:
            out.append(Record(THREAD_GROUP_DYN, count=len(thread),
                              times=cfg.tcs_max_num - min_pool - 1))  # fmt: skip
    return out


def _dynamic(r: Record) -> Record:
    if r.id == STACK_MAX:
        return replace(r, id=r.id + DYN, ops=POST_ADD | GROW_DOWN)
    return r if r.id == GUARD else replace(r, id=r.id + DYN, ops=POST_ADD | DYN_THREAD)


def _placed(records: list[Record], start: int, size_max: int) -> tuple[list[Record], int]:
    """update_layout_entries and build_layout_entries: addresses, groups' steps, the
    power-of-two enclave size and the guard record that fills up to it."""
    out: list[Record] = []
    rva = start
    for r in records:
        if r.group:
            step = sum(x.pages for x in out[len(out) - r.count :]) * PAGE_SIZE
            out.append(replace(r, step=step))
            rva += r.times * step
        else:
            out.append(replace(r, rva=rva))
            rva += r.pages * PAGE_SIZE
    size = 1 << max(rva - 1, 0).bit_length()
    limit = min(size_max, MAX_ENCLAVE_SIZE)
    if size > limit or any(max(r.pages, r.times) > _U32 for r in out):
        raise ConfigError(f"the enclave needs {rva:#x} bytes, more than the {limit:#x} "
                          "sgxtool builds for this SDK release; check TCSNum, HeapMaxSize and "
                          "StackMaxSize")  # fmt: skip
    if size > rva:
        out.append(Record(GUARD, pages=(size - rva) // PAGE_SIZE, rva=rva))
    return out, size


def _first(records: list[Record], id_: int) -> Record:
    return next(r for r in records if r.id == id_)


def _tcs_template(records: list[Record], entry: int) -> bytes:
    """build_tcs_template: offsets relative to the TCS; the loader adds its address."""
    tcs, ssa, td = (_first(records, i) for i in (TCS, SSA, TD))
    fs = td.rva - tcs.rva + (td.pages - 1) * PAGE_SIZE
    t = Tcs(ossa=ssa.rva - tcs.rva, nssa=_SSA_NUM, oentry=entry, ofsbase=fs, ogsbase=fs,
            fslimit=0xFFFFFFFF, gslimit=0xFFFFFFFF)  # fmt: skip
    return t.pack()[:_TCS_TEMPLATE]


def _global_data(
    p: SdkProfile,
    cfg: SignConfig,
    records: list[Record],
    size: int,
    tcs_template: bytes,
    xfrm: int,
    tls_size: int,
) -> bytes:
    """build_gd_template + do_update_global_data: the words the tRTS reads, its thread
    data template (TCS-relative), the TCS template and a copy of the layout table."""
    tcs, ssa, td, stack_min = (_first(records, i) for i in (TCS, SSA, TD, STACK_MIN))
    words = {"enclave_size": size, "heap_offset": _first(records, HEAP_MIN).rva,
             "heap_size": cfg.heap_init, "thread_policy": cfg.tcs_policy,
             "tcs_max_num": cfg.tcs_max_num}  # fmt: skip
    gd = bytearray(p.global_data_size)
    for i, name in enumerate(p.global_words):
        struct.pack_into("<Q", gd, 8 * i, words.get(name, 0))
    self_addr = td.rva - tcs.rva + (td.pages - 1) * PAGE_SIZE
    stack_base = stack_min.rva + cfg.stack_min - tcs.rva
    xsave = 0
    for bits, bytes_ in p.xsave_sizes:
        xsave = bytes_ if xfrm & bits == bits else xsave
    td_fields = {0: self_addr, 8: stack_base, 16: stack_base, 24: stack_base - cfg.stack_max,
                 32: ssa.rva - tcs.rva + _SSA_FRAME_SIZE * PAGE_SIZE - _SSA_GPR, 56: xsave,
                 80: self_addr - tls_size if tls_size else td.rva - tcs.rva,
                 88: self_addr + _TD_TLS_ADDR}  # fmt: skip
    for off, value in td_fields.items():
        struct.pack_into("<Q", gd, p.td_template_at + off, value & _U64)
    at = p.td_template_at + _TD_SIZE
    gd[at : at + _TCS_TEMPLATE] = tcs_template
    table = b"".join(r.pack() for r in records)
    at += _TCS_IN_GD
    if at + 8 + len(table) > len(gd):
        raise ConfigError(f"{len(records)} layout records do not fit g_global_data's table; "
                          "use fewer kinds of threads (TCSMinPool, TCSMaxNum)")  # fmt: skip
    struct.pack_into("<II", gd, at, len(records), 0)
    gd[at + 8 : at + 8 + len(table)] = table
    return bytes(gd)


def build_metadata(p: SdkProfile, cfg: SignConfig, elf: ElfFacts, css: Sigstruct) -> bytes:
    """The primary ``metadata_t`` copy (build_metadata), data in allocation order:
    TCS template, global-data template, 8 zero bytes, patch table, layout table."""
    tcs_at = _DATA_AT
    gd_at = tcs_at + _TCS_TEMPLATE
    zero_at = gd_at + p.global_data_size
    patch_at = zero_at + 8
    records, size = _placed(_records(p, cfg, tcs_at, elf.tls_size), elf.end, p.size_max)
    tcs_template = _tcs_template(records, elf.entry)
    xfrm = (~css.attributemask_xfrm & _U64) | (css.attributes_xfrm & css.attributemask_xfrm)
    gd = _global_data(p, cfg, records, size, tcs_template, xfrm, elf.tls_size)
    # ELF64: g_global_data, then e_shnum, e_shoff and e_shstrndx zeroed (not measured)
    patches = [(elf.global_data_offset, gd_at, len(gd)), (0x3C, zero_at, 2), (0x28, zero_at, 8),
               (0x3E, zero_at, 2)]  # fmt: skip
    patch_table = b"".join(_PATCH.pack(*x) for x in patches)
    layout_at = patch_at + len(patch_table)
    table = b"".join(r.pack() for r in records)
    total = layout_at + len(table)
    head = _HEADER.pack(METADATA_MAGIC, p.version[0] << 32 | p.version[1], total, cfg.tcs_policy,
                        _SSA_FRAME_SIZE, _MAX_SAVE_BUF, 0, cfg.tcs_min_pool, size,
                        css.attributes_flags, xfrm)  # fmt: skip
    dirs = struct.pack("<IIII", patch_at, len(patch_table), layout_at, len(table))
    return head + css.pack() + dirs + tcs_template + gd + bytes(8) + patch_table + table


def compat_copies(p: SdkProfile, primary: bytes, tcs_num: int) -> list[bytes]:
    """The copies for older loaders that follow the primary (generate_compatible_metadata):
    the same bytes under each older version, the last one (1.x, for loaders without EDMM)
    with every static thread in one group and dynamic records dropped. Their SIGSTRUCT is
    the primary's, so they measure the same."""
    out = [_with(primary, v, None) for v in p.compat[:-1]]
    records = _unpack_table(primary)
    cut = _legacy(records, tcs_num) if p.utility_stack_grows else _legacy_2_0(records)
    out.append(_with(primary, p.compat[-1], None if cut is None else _cleanup(cut, p)))
    return out


def _unpack_table(copy: bytes) -> list[Record]:
    at, size = struct.unpack_from("<II", copy, _DIRS_AT + 8)
    out = []
    for pos in range(at, at + size, 32):
        if struct.unpack_from("<H", copy, pos)[0] & 0x1000:
            id_, count, times, step = _GROUP.unpack_from(copy, pos)
            out.append(Record(id_, count=count, times=times, step=step))
        else:
            out.append(Record(*_ENTRY.unpack_from(copy, pos)))
    return out


def _with(copy: bytes, version: tuple[int, int], records: list[Record] | None) -> bytes:
    """``copy`` under another version, its layout table replaced by ``records`` if given
    (the table is the last thing in a copy, so the copy shrinks with it)."""
    data = bytearray(copy)
    struct.pack_into("<Q", data, 8, version[0] << 32 | version[1])
    if records is not None:
        at = struct.unpack_from("<I", data, _DIRS_AT + 8)[0]
        table = b"".join(r.pack() for r in records)
        data[at:] = table
        struct.pack_into("<I", data, 16, len(data))
        struct.pack_into("<I", data, _DIRS_AT + 12, len(table))
    return bytes(data)


def _legacy(records: list[Record], tcs_num: int) -> list[Record]:
    """SDK 2.1+: the records after the utility thread become one group of TCSNum-1."""
    first = next(i for i, r in enumerate(records) if r.id == GUARD)
    last = next(i for i, r in enumerate(records) if r.id == TD)
    if last + 1 == len(records):
        return records
    thread = records[first : last + 1]
    group = Record(THREAD_GROUP, count=len(thread), times=tcs_num - 1,
                   step=sum(r.pages for r in thread) * PAGE_SIZE)  # fmt: skip
    return [*records[: last + 1], group]


def _legacy_2_0(records: list[Record]) -> list[Record] | None:
    """SDK 2.0: drop the dynamic thread, its group and the last guard; fold the min-pool
    and EREMOVE threads into one group. None: without a dynamic thread, the copy is kept
    as it is."""
    dyn = next((i for i, r in enumerate(records) if r.id in (STACK_DYN_MAX, STACK_DYN_MIN)), None)
    if dyn is None:
        return None
    last = dyn - 2  # the record before the dynamic thread's guard
    utility_td = next(i for i, r in enumerate(records[: last + 1]) if r.id == TD)
    first = utility_td + 1
    if first >= last:
        return records[: last + 1]
    head, tail = records[first], records[last]
    if head.id == THREAD_GROUP:
        more = tail.times + 1 if tail.id == THREAD_GROUP else 1
        return [*records[:first], replace(head, times=head.times + more)]
    count = last - first if tail.id == THREAD_GROUP else last - first + 1
    times = tail.times + 1 if tail.id == THREAD_GROUP else 1
    step = sum(r.pages for r in records[first : first + count]) * PAGE_SIZE
    return [*records[:first], Record(THREAD_GROUP, count=count, times=times, step=step)]


def _cleanup(records: list[Record], p: SdkProfile) -> list[Record]:
    """metadata_cleanup: nothing is added after EINIT by a 1.x loader, so HEAP_MAX is not
    added at all and POST_ADD goes from HEAP_INIT (and, after 2.0, the utility stack)."""
    out = list(records)
    todo = {HEAP_MAX, HEAP_INIT} | ({STACK_MAX} if p.utility_stack_grows else set())
    for i, r in enumerate(out):
        if r.id in todo:
            todo.discard(r.id)
            si_flags = 0 if r.id == HEAP_MAX else r.si_flags
            out[i] = replace(r, ops=r.ops & ~POST_ADD, si_flags=si_flags)
    return out
