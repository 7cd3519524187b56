"""The guest owner's launch secret: a LAUNCH_SECRET packet, as sevctl ``secret build``.

The secrets go into OVMF's secret table (GUID 1e74f542-..., ``hwsim.sev.ovmf``), which is
encrypted with the TEK; the header's MAC, made with the TIK, covers the packet and the
launch measurement, so the packet is good only for the launch the owner checked
(``hwsim.sev.session.seal_secret``). ``open_packet`` is the other direction, for checking
a packet before it is sent: it takes sevctl's and libvirt's table padding alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwsim.sev.arch import SECRET_HEADER_SIZE, SecretHeader
from hwsim.sev.errors import PspError
from hwsim.sev.ovmf import parse_secret_table, secret_table
from hwsim.sev.session import open_secret, seal_secret
from memcrypt.errors import FormatError
from memcrypt.files import read_file
from sevtool.errors import SevFormatError, SevInputError, SevToolError

if TYPE_CHECKING:
    from hwsim.sev.session import TransportKeys

__all__ = [
    "MAX_SECRET_PAYLOAD",
    "SecretPacket",
    "build_packet",
    "open_packet",
    "parse_secret_option",
]

# The largest payload sevctl builds (its tests fill exactly this) and the size of OVMF's
# secret area is 3 KiB; 16 KiB bounds what one LAUNCH_SECRET may carry here.
MAX_SECRET_PAYLOAD = 16 * 1024
_ENTRY_OVERHEAD = 16 + 4


@dataclass(frozen=True)
class SecretPacket:
    """A LAUNCH_SECRET packet: header (flags, IV, MAC) and encrypted payload."""

    header: SecretHeader
    payload: bytes
    entries: tuple[tuple[uuid.UUID, int], ...]  # GUID and size of each secret

    def as_json(self) -> dict[str, Any]:
        return {
            "payload_size": len(self.payload),
            "secrets": [{"guid": str(guid), "size": size} for guid, size in self.entries],
        }


def parse_secret_option(value: str) -> tuple[uuid.UUID, Path]:
    """``GUID:FILE`` (sevctl's ``--secret``); the GUID may also be ``luks-key``, libvirt's
    name for the disk passphrase GUID GRUB and Linux read."""
    guid_text, sep, file = value.partition(":")
    if not sep or not file:
        raise SevInputError(f"--secret {value!r}: expected GUID:FILE")
    if guid_text == "luks-key":
        guid_text = "736869e5-84f0-4973-92ec-06879ce3da0b"
    try:
        return uuid.UUID(guid_text), Path(file)
    except ValueError:
        raise SevInputError(f"--secret {value!r}: {guid_text!r} is not a GUID") from None


def build_packet(
    keys: TransportKeys,
    measure: bytes,
    secrets: Sequence[tuple[uuid.UUID, Path]],
    *,
    iv: bytes | None = None,
) -> SecretPacket:
    """Read each secret file and seal them for the launch whose measurement is ``measure``."""
    if not secrets:
        raise SevInputError("no secret given: add --secret GUID:FILE")
    if iv is not None and len(iv) != 16:
        raise SevInputError(f"--iv must be 16 bytes, got {len(iv)}")
    entries = [
        (guid, read_file(path, "secret", max_size=MAX_SECRET_PAYLOAD)) for guid, path in secrets
    ]
    table = secret_table(entries)
    if len(table) > MAX_SECRET_PAYLOAD:
        raise SevInputError(
            f"the secrets make a {len(table)}-byte table; at most {MAX_SECRET_PAYLOAD} fit "
            f"(the data of one secret at most {MAX_SECRET_PAYLOAD - 2 * _ENTRY_OVERHEAD} bytes)"
        )
    header, payload = seal_secret(keys, table, measure, iv=iv)
    return SecretPacket(header, payload, tuple((guid, len(data)) for guid, data in entries))


def open_packet(
    keys: TransportKeys, header: bytes, payload: bytes, measure: bytes
) -> list[tuple[uuid.UUID, bytes]]:
    """Check a packet as the firmware will and return its secrets (GUID, data)."""
    if len(header) != SECRET_HEADER_SIZE:
        raise SevInputError(
            f"a secret header is {SECRET_HEADER_SIZE} bytes, got {len(header)}",
            hint="the header and payload files may be swapped",
        )
    if len(payload) > MAX_SECRET_PAYLOAD:
        raise SevInputError(f"the payload is larger than {MAX_SECRET_PAYLOAD} bytes")
    try:
        plaintext = open_secret(keys, header, payload, measure)
    except PspError as exc:
        raise SevToolError(f"the packet would be refused: {exc}") from exc
    try:
        return parse_secret_table(plaintext)
    except FormatError as exc:
        raise SevFormatError(f"the payload's secret table: {exc}") from exc
