"""GUIDed tables an SEV guest's firmware and its owner exchange, byte-exact.

* The footer table at the end of an OVMF image (QEMU ``docs/specs/sev-guest-firmware``,
  virtee/sev ``measurement/ovmf.rs``): entries read backwards from a footer 32 bytes
  before the end of the image, each ``data || u16 size || GUID``.
* The kernel-hashes table QEMU places in guest memory when OVMF asks for it
  (``SEV_HASH_TABLE_RV``) and that the launch digest covers: header GUID, u16 length,
  entries for cmdline, initrd, kernel (that order) of GUID, u16 length 50, SHA-256,
  padded to 16 bytes (sevctl ``build_kernel_table``; ``shared/reference/sev.md`` 2.4).
* The secret table a LAUNCH_SECRET payload carries (Linux ``efi_secret``; sevctl
  ``build_secrets_table``): header GUID, u32 total length, entries of GUID, u32 length
  (16 + 4 + data), data, padded to 16 bytes (sev.md 2.5).

All GUIDs are stored in the mixed-endian EFI form (``uuid.bytes_le``).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

from memcrypt.errors import FormatError

__all__ = [
    "CMDLINE_ENTRY",
    "INITRD_ENTRY",
    "KERNEL_ENTRY",
    "KERNEL_HASHES_HEADER",
    "OVMF_TABLE_FOOTER",
    "SECRET_TABLE_HEADER",
    "SEV_ES_RESET_BLOCK",
    "SEV_HASH_TABLE_RV",
    "SEV_SECRET_BLOCK",
    "build_guid_table",
    "cmdline_hash",
    "footer_table",
    "footer_u32",
    "kernel_hashes_table",
    "parse_secret_table",
    "secret_table",
]

OVMF_TABLE_FOOTER = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d")
SEV_HASH_TABLE_RV = uuid.UUID("7255371f-3a3b-4b04-927b-1da6efa8d454")
SEV_SECRET_BLOCK = uuid.UUID("4c2eb361-7d9b-4cc3-8081-127c90d3d294")
SEV_ES_RESET_BLOCK = uuid.UUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
KERNEL_HASHES_HEADER = uuid.UUID("9438d606-4f22-4cc9-b479-a793d411fd21")
CMDLINE_ENTRY = uuid.UUID("97d02dd8-bd20-4c94-aa78-e7714d36ab2a")
INITRD_ENTRY = uuid.UUID("44baf731-3a2f-4bd7-9af1-41e29169781d")
KERNEL_ENTRY = uuid.UUID("4de79437-abd2-427f-b835-d5b172d2045b")
SECRET_TABLE_HEADER = uuid.UUID("1e74f542-71dd-4d66-963e-ef4287ff173b")

# The footer entry ends 32 bytes before the end of the image (the reset vector area).
_FOOTER_END = 32
_FOOTER_ENTRY = 2 + 16
_GUID = 16


def footer_table(image_tail: bytes) -> dict[uuid.UUID, bytes]:
    """The footer table of an OVMF image, given its last bytes (4 KiB hold any real table).

    An image without the footer GUID has no table: the result is empty.
    """
    end = len(image_tail) - _FOOTER_END
    if end < _FOOTER_ENTRY:
        return {}
    size = int.from_bytes(image_tail[end - _FOOTER_ENTRY : end - _GUID], "little")
    if uuid.UUID(bytes_le=image_tail[end - _GUID : end]) != OVMF_TABLE_FOOTER:
        return {}
    start = end - size
    if size < _FOOTER_ENTRY or start < 0:
        raise FormatError(f"OVMF footer table size {size} does not fit the image")
    table: dict[uuid.UUID, bytes] = {}
    cursor = end - _FOOTER_ENTRY
    while cursor > start:
        if cursor - start < _FOOTER_ENTRY:
            raise FormatError("OVMF footer table entry overruns the table")
        length = int.from_bytes(image_tail[cursor - _FOOTER_ENTRY : cursor - _GUID], "little")
        if length < _FOOTER_ENTRY or cursor - length < start:
            raise FormatError(f"OVMF footer table entry of {length} bytes overruns the table")
        guid = uuid.UUID(bytes_le=image_tail[cursor - _GUID : cursor])
        table[guid] = image_tail[cursor - length : cursor - _FOOTER_ENTRY]
        cursor -= length
    return table


def footer_u32(table: dict[uuid.UUID, bytes], guid: uuid.UUID, index: int = 0) -> int | None:
    """The ``index``-th u32 of a footer entry; None when absent or zero (the way OVMF says
    "not supported": the hash-table address of a build without kernel hashes is 0)."""
    data = table.get(guid, b"")
    if len(data) < 4 * (index + 1):
        return None
    return int.from_bytes(data[4 * index : 4 * index + 4], "little") or None


def build_guid_table(
    header: uuid.UUID,
    entries: Sequence[tuple[uuid.UUID, bytes]],
    length_size: int,
) -> bytes:
    """A GUIDed table: header GUID, total length, then GUID || length || data entries.

    The lengths count the GUID and the length field. Zero padding to a multiple of 16
    follows and is not counted, as sevctl and QEMU write it (none when already aligned).
    """
    body = b"".join(
        guid.bytes_le + (_GUID + length_size + len(data)).to_bytes(length_size, "little") + data
        for guid, data in entries
    )
    table = header.bytes_le + (_GUID + length_size + len(body)).to_bytes(length_size, "little")
    table += body
    return table + bytes(-len(table) % 16)


def cmdline_hash(cmdline: str | bytes | None) -> bytes:
    """SHA-256 of a kernel command line as QEMU measures it: with its trailing NUL."""
    raw = cmdline.encode() if isinstance(cmdline, str) else (cmdline or b"")
    return hashlib.sha256(raw + b"\0").digest()


def kernel_hashes_table(kernel: bytes, initrd: bytes, cmdline: bytes) -> bytes:
    """The 176-byte kernel-hashes table from three SHA-256 digests.

    An absent initrd is the hash of nothing; the cmdline digest comes from
    :func:`cmdline_hash`.
    """
    for name, digest in (("kernel", kernel), ("initrd", initrd), ("cmdline", cmdline)):
        if len(digest) != 32:
            raise FormatError(f"{name} hash must be a 32-byte SHA-256, got {len(digest)} bytes")
    entries = [(CMDLINE_ENTRY, cmdline), (INITRD_ENTRY, initrd), (KERNEL_ENTRY, kernel)]
    return build_guid_table(KERNEL_HASHES_HEADER, entries, 2)


def secret_table(secrets: Sequence[tuple[uuid.UUID, bytes]]) -> bytes:
    """The plaintext of a LAUNCH_SECRET payload, padded as sevctl pads it."""
    return build_guid_table(SECRET_TABLE_HEADER, secrets, 4)


def parse_secret_table(data: bytes) -> list[tuple[uuid.UUID, bytes]]:
    """The entries of a secret table, checked.

    Both paddings in use are accepted: sevctl's (to the next multiple of 16, not counted
    in the total length) and libvirt's (always 1 to 16 bytes); padding must be zero.
    """
    if len(data) < _GUID + 4 or uuid.UUID(bytes_le=data[:_GUID]) != SECRET_TABLE_HEADER:
        raise FormatError("not a secret table: the header GUID 1e74f542-... is missing")
    total = int.from_bytes(data[_GUID : _GUID + 4], "little")
    if not _GUID + 4 <= total <= len(data):
        raise FormatError(f"secret table length {total} does not fit its {len(data)} bytes")
    entries, cursor = [], _GUID + 4
    while cursor < total and any(data[cursor:total]):
        if total - cursor < _GUID + 4:
            raise FormatError(f"secret table entry at offset {cursor} is truncated")
        guid = uuid.UUID(bytes_le=data[cursor : cursor + _GUID])
        length = int.from_bytes(data[cursor + _GUID : cursor + _GUID + 4], "little")
        if length < _GUID + 4 or cursor + length > total:
            raise FormatError(f"secret table entry {guid} of {length} bytes overruns the table")
        entries.append((guid, data[cursor + _GUID + 4 : cursor + length]))
        cursor += length
    padding = data[cursor:]
    if len(padding) > 16 or any(padding):
        raise FormatError("secret table has data after its last entry")
    return entries
