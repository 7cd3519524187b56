"""SHA-256 whose running state can be saved and resumed: the PSP's launch digest.

The firmware extends a guest's launch digest with every LAUNCH_UPDATE_DATA and finishes it
at LAUNCH_MEASURE (``shared/reference/sev.md`` 2.4); between those commands the simulated
firmware's memory is state.db, so the digest's intermediate state must be stored and taken
up again by a later process. :mod:`hashlib` cannot export its state, so the bulk of the work
goes through OpenSSL's ``SHA256_Update`` on a ``SHA256_CTX`` we own (the library Python's
own ``hashlib`` is built on), and when that library cannot be loaded, through the FIPS
180-4 compression function written out below (correct, but about a thousand times slower).

Saved state: ``H0..H7`` (8 x u32), the message length in bytes (u64) and the pending
partial block (0-63 bytes): the same whichever implementation wrote it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import struct
from typing import Any

__all__ = ["ResumableSha256"]

_IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
       0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)  # fmt: skip
# FIPS 180-4 4.2.2: the first 32 bits of the cube roots of the first 64 primes.
_K = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
)  # fmt: skip
_M32 = 0xFFFFFFFF
_HEAD = struct.Struct("<8IQ")


class _Ctx(ctypes.Structure):
    """OpenSSL's ``SHA256_CTX`` (``include/openssl/sha.h``): stable since OpenSSL 0.9.8."""

    _fields_ = [
        ("h", ctypes.c_uint32 * 8),
        ("nl", ctypes.c_uint32),
        ("nh", ctypes.c_uint32),
        ("data", ctypes.c_uint32 * 16),
        ("num", ctypes.c_uint),
        ("md_len", ctypes.c_uint),
    ]


@functools.cache
def _libcrypto() -> Any | None:
    for name in (ctypes.util.find_library("crypto"), "libcrypto.so.3", "libcrypto.so"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
            return lib
        except (OSError, AttributeError):
            continue
    return None


class ResumableSha256:
    """SHA-256 over everything given to :meth:`update`, across :meth:`save`/:meth:`load`."""

    def __init__(self, *, native: bool = True) -> None:
        self._h = list(_IV)
        self._length = 0
        self._tail = b""
        self._lib = _libcrypto() if native else None

    @property
    def native(self) -> bool:
        """True when OpenSSL does the compression (False: the slow Python fallback)."""
        return self._lib is not None

    def update(self, data: bytes | memoryview) -> None:
        data = bytes(data)
        self._length += len(data)
        buf = self._tail + data
        whole = len(buf) - len(buf) % 64
        if whole:
            self._compress(buf[:whole])
        self._tail = buf[whole:]

    def digest(self) -> bytes:
        """The SHA-256 of the data so far (the state is left as it was)."""
        pad = b"\x80" + bytes((55 - self._length) % 64) + struct.pack(">Q", self._length * 8)
        copy = ResumableSha256.load(self.save(), native=self.native)
        copy._compress(self._tail + pad)
        return struct.pack(">8I", *copy._h)

    def save(self) -> bytes:
        return _HEAD.pack(*self._h, self._length) + self._tail

    @classmethod
    def load(cls, state: bytes, *, native: bool = True) -> ResumableSha256:
        if not _HEAD.size <= len(state) < _HEAD.size + 64:
            raise ValueError(f"SHA-256 state must be {_HEAD.size}-{_HEAD.size + 63} bytes")
        *h, length = _HEAD.unpack_from(state)
        tail = state[_HEAD.size :]
        if length % 64 != len(tail):
            raise ValueError("SHA-256 state: the pending block does not match the length")
        hasher = cls(native=native)
        hasher._h, hasher._length, hasher._tail = list(h), length, tail
        return hasher

    def _compress(self, blocks: bytes) -> None:
        if self._lib is None:
            for at in range(0, len(blocks), 64):
                _python_block(self._h, blocks[at : at + 64])
            return
        ctx = _Ctx()
        ctx.h[:] = self._h
        ctx.md_len = 32
        self._lib.SHA256_Update(ctypes.byref(ctx), blocks, len(blocks))
        self._h = list(ctx.h)


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & _M32


def _python_block(h: list[int], block: bytes) -> None:
    """One SHA-256 compression (FIPS 180-4 6.2.2) of a 64-byte block into ``h``."""
    w = list(struct.unpack(">16I", block))
    for t in range(16, 64):
        s0 = _rotr(w[t - 15], 7) ^ _rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
        s1 = _rotr(w[t - 2], 17) ^ _rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & _M32)
    a, b, c, d, e, f, g, hh = h
    for t in range(64):
        t1 = hh + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + ((e & f) ^ (~e & g)) + _K[t] + w[t]
        t2 = (_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))
        a, b, c, d, e, f, g, hh = (t1 + t2) & _M32, a, b, c, (d + t1) & _M32, e, f, g
    for i, v in enumerate((a, b, c, d, e, f, g, hh)):
        h[i] = (h[i] + v) & _M32
