"""The simulated AMD: the simulator's own root (ARK) and signing key (ASK), NOT AMD's.

Real CEKs are signed by AMD's ASK under AMD's ARK at manufacture, and AMD's key server
(KDS, ``kdsintf.amd.com/cek/id/<chip id>``) hands out the signed CEK. The simulator plays
that role with its own keys. They are derived deterministically from a published constant
seed, so every simulated machine on every installation chains to the same, clearly named
simulator ARK, and a chain from a simulated machine never verifies against AMD's ARK.
The keys are 2048-bit RSA with SHA-256, the Naples-generation form of the AMD key
certificate (832 bytes): pure-Python prime generation for them takes about half a second
once per process, whereas 4096-bit keys would take tens of seconds.

Nothing here is secret: anyone can re-derive these keys, which is the point of a simulator.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterator

from cryptography.hazmat.primitives.asymmetric import rsa

from hwsim.sev.arch import SIG_SIZE, AmdCert, SevAlgo, SevCert, SevUsage, int_to_le
from hwsim.sev.certs import load_amd_cert, make_amd_cert

__all__ = ["SIM_ARK_NAME", "sim_ark_cert", "sim_ask_cert", "sim_sign_cek"]

SIM_ARK_NAME = "hwsim simulated ARK — not AMD's"
_SEED = b"memcrypt/hwsim simulated AMD root of trust - not AMD's - v1"
_KEY_BITS = 2048
_E = 65537
_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % q for q in range(2, int(p**0.5) + 1))]
_MR_ROUNDS = 8


def _stream(label: bytes) -> Iterator[int]:
    """An endless deterministic stream of 512-bit numbers for ``label``."""
    counter = 0
    while True:
        counter += 1
        block = hashlib.sha512(_SEED + b"/" + label + counter.to_bytes(8, "little")).digest()
        yield int.from_bytes(block, "big")


def _probably_prime(n: int, rand: Iterator[int]) -> bool:
    """Miller-Rabin with bases drawn from the deterministic stream."""
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(_MR_ROUNDS):
        x = pow(2 + next(rand) % (n - 3), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(rand: Iterator[int], bits: int) -> int:
    """A prime of exactly ``bits`` bits, top two bits set so p*q has 2*bits bits."""
    while True:
        candidate = (next(rand) << 512 | next(rand)) >> (1024 - bits)
        candidate |= (3 << (bits - 2)) | 1
        if any(candidate % p == 0 for p in _SMALL_PRIMES) or (candidate - 1) % _E == 0:
            continue
        if _probably_prime(candidate, rand):
            return candidate


def _derive_rsa(label: bytes) -> rsa.RSAPrivateKey:
    rand = _stream(label)
    p = _prime(rand, _KEY_BITS // 2)
    q = _prime(rand, _KEY_BITS // 2)
    while q == p:
        q = _prime(rand, _KEY_BITS // 2)
    lam = math.lcm(p - 1, q - 1)
    d = pow(_E, -1, lam)
    public = rsa.RSAPublicNumbers(_E, p * q)
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), public
    )
    return numbers.private_key()


def _mgf1(seed: bytes, length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def _pss_sign(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    """RSASSA-PSS (RFC 8017 9.1.1) with SHA-256 and a salt derived from the message.

    A deterministic salt makes the simulator's certificates byte-identical everywhere; a
    verifier cannot tell it from a random one. Returned little-endian, as AMD stores it.
    """
    h_len = 32
    m_hash = hashlib.sha256(message).digest()
    salt = hashlib.sha256(b"hwsim pss salt" + m_hash).digest()
    digest = hashlib.sha256(bytes(8) + m_hash + salt).digest()
    em_bits = key.key_size - 1
    em_len = (em_bits + 7) // 8
    db = bytes(em_len - 2 * h_len - 2) + b"\x01" + salt
    masked = bytearray(a ^ b for a, b in zip(db, _mgf1(digest, len(db)), strict=True))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    encoded = int.from_bytes(bytes(masked) + digest + b"\xbc", "big")
    numbers = key.private_numbers()
    return int_to_le(pow(encoded, numbers.d, numbers.public_numbers.n), key.key_size // 8)


def _key_id(name: bytes) -> bytes:
    return hashlib.sha256(_SEED + b"/key-id/" + name).digest()[:16]


@functools.cache
def _ark_key() -> rsa.RSAPrivateKey:
    return _derive_rsa(b"ARK")


@functools.cache
def _ask_key() -> rsa.RSAPrivateKey:
    return _derive_rsa(b"ASK")


def _signed(key: rsa.RSAPrivateKey, usage: SevUsage, name: bytes, issuer: bytes) -> bytes:
    cert = make_amd_cert(key.public_key(), usage, _key_id(name), _key_id(issuer))
    signer = _ark_key()
    cert.signature = _pss_sign(signer, cert.signed_bytes())
    return cert.pack()


@functools.cache
def _ark_bytes() -> bytes:
    return _signed(_ark_key(), SevUsage.ARK, b"ARK", b"ARK")


@functools.cache
def _ask_bytes() -> bytes:
    return _signed(_ask_key(), SevUsage.ASK, b"ASK", b"ARK")


def sim_ark_cert() -> AmdCert:
    """The simulator's self-signed root key certificate (832 bytes)."""
    return load_amd_cert(_ark_bytes(), SIM_ARK_NAME)


def sim_ask_cert() -> AmdCert:
    """The simulator's ASK certificate, signed by :func:`sim_ark_cert`."""
    return load_amd_cert(_ask_bytes(), "hwsim simulated ASK")


def sim_sign_cek(cek: SevCert) -> SevCert:
    """A CEK certificate as the simulated key server returns it: signed by the ASK."""
    unsigned = cek.unsigned()
    sig = _pss_sign(_ask_key(), unsigned.signed_bytes()).ljust(SIG_SIZE, b"\0")
    return unsigned.with_slot(0, SevUsage.ASK, SevAlgo.RSA_SHA256, sig)
