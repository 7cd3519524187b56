"""Signing with a key held in a PKCS#11 token (an HSM, a smart card, SoftHSM2), named by an
RFC 7512 URI: ``pkcs11:token=release;object=sgx-signer``.

The private key never leaves the token: the token signs with its own hash-and-sign
mechanism (CKM_SHA256_RSA_PKCS, CKM_ECDSA_SHA256), whose output is already the raw form
of :mod:`memcrypt.signer`, and every signature is verified with the public key before it
is used. The PKCS#11 library (the module a vendor ships) comes from the URI's
``module-path`` or ``$MEMCRYPT_PKCS11_MODULE``; the PIN from the URI's ``pin-source`` or
``pin-value``, else from the caller (a prompt, an environment variable or a file).

Needs the optional ``python-pkcs11`` package: ``pip install 'memcrypt[hsm]'``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from memcrypt.errors import InvalidInput
from memcrypt.files import read_file
from memcrypt.signer import (
    Ecdsa,
    PublicKey,
    RsaPkcs1v15,
    Scheme,
    SignerError,
    checked,
    scheme_for,
)

__all__ = ["MODULE_ENV", "Pkcs11Signer", "Pkcs11Uri", "is_pkcs11_uri"]

MODULE_ENV = "MEMCRYPT_PKCS11_MODULE"
# RFC 7512 2.3: the path attributes that select a token and an object.
_PATH_ATTRS = {"token", "object", "id", "serial", "manufacturer", "model", "slot-id", "type"}
_QUERY_ATTRS = {"module-path", "module-name", "pin-value", "pin-source"}


def is_pkcs11_uri(text: str) -> bool:
    return text.lower().startswith("pkcs11:")


@dataclass(frozen=True)
class Pkcs11Uri:
    """The parts of an RFC 7512 URI memcrypt uses; values percent-decoded."""

    path: dict[str, str]
    query: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Pkcs11Uri:
        if not is_pkcs11_uri(text):
            raise InvalidInput(f"{text!r} is not a pkcs11: URI")
        parts = urlsplit(text)
        path = cls._attrs(parts.path, ";", _PATH_ATTRS, text)
        query = cls._attrs(parts.query, "&", _QUERY_ATTRS, text)
        if "object" not in path and "id" not in path:
            raise InvalidInput(
                f"{text}: names no key", hint="add object=LABEL or id=%01 (RFC 7512)"
            )
        return cls(path, query)

    @staticmethod
    def _attrs(text: str, sep: str, known: set[str], uri: str) -> dict[str, str]:
        attrs: dict[str, str] = {}
        for item in filter(None, text.split(sep)):
            name, eq, value = item.partition("=")
            if not eq or name not in known:
                raise InvalidInput(
                    f"{uri}: {item!r} is not a PKCS#11 URI attribute memcrypt knows",
                    hint=f"known: {', '.join(sorted(known))}",
                )
            # id is bytes (%01%02...); labels and the rest are UTF-8 text.
            attrs[name] = unquote(value, encoding="latin-1" if name == "id" else "utf-8")
        return attrs

    def display(self) -> str:
        """The URI without its query (module path, PIN), as messages name the key."""
        return "pkcs11:" + ";".join(
            f"{k}={quote(v, safe='', encoding='latin-1' if k == 'id' else 'utf-8')}"
            for k, v in self.path.items()
        )

    def module(self) -> str:
        module = self.query.get("module-path") or os.environ.get(MODULE_ENV)
        if not module:
            raise InvalidInput(
                "no PKCS#11 module: which library drives the token?",
                hint=f"add ?module-path=/path/to/lib.so to the URI, or set {MODULE_ENV}",
            )
        return module

    def pin(self, fallback: bytes | None) -> str | None:
        """The PIN: ``pin-value``, the file ``pin-source`` names, else ``fallback``."""
        if "pin-value" in self.query:
            return self.query["pin-value"]
        source = self.query.get("pin-source")
        if source is not None:
            path = Path(source.removeprefix("file:"))
            return read_file(path, "PIN file", max_size=4096).decode().rstrip("\r\n")
        return fallback.decode() if fallback is not None else None


@dataclass(frozen=True)
class Pkcs11Signer:
    """A key in a PKCS#11 token. :meth:`open` finds it and reads its public key."""

    uri: Pkcs11Uri
    pin: str | None
    public_key: PublicKey
    scheme: Scheme = field(default_factory=RsaPkcs1v15)

    @classmethod
    def open(cls, uri: str, pin: bytes | None = None, hash_name: str = "sha256") -> Pkcs11Signer:
        parsed = Pkcs11Uri.parse(uri)
        signer_pin = parsed.pin(pin)
        with _Session(parsed, signer_pin) as session:
            public = _public_key(_private_key(session, parsed))
        return cls(parsed, signer_pin, public, scheme_for(public, hash_name))

    def sign(self, data: bytes) -> bytes:
        import pkcs11

        if isinstance(self.scheme, Ecdsa):
            # CKM_ECDSA over a digest made here: tokens that sign ECDSA all have it, while
            # CKM_ECDSA_SHA256 is optional (SoftHSM2 2.6 lacks it). The output is r || s.
            digest = hashes.Hash(self.scheme.hash)
            digest.update(data)
            mechanism, message = pkcs11.Mechanism.ECDSA, digest.finalize()
        else:
            mechanism = getattr(pkcs11.Mechanism, f"{self.scheme.hash_name.upper()}_RSA_PKCS")
            message = data
        with _Session(self.uri, self.pin) as session:
            try:
                raw = _private_key(session, self.uri).sign(message, mechanism=mechanism)
            except pkcs11.PKCS11Error as exc:
                raise SignerError(f"the token refused to sign: {_why(exc)}") from exc
        return checked(self, bytes(raw), data, "the PKCS#11 token")


class _Session:
    """A logged-in session on the token the URI names (python-pkcs11 wrapped)."""

    def __init__(self, uri: Pkcs11Uri, pin: str | None) -> None:
        self.uri, self.pin = uri, pin
        self.session: Any = None

    def __enter__(self) -> Any:
        pkcs11 = _library()
        try:
            lib = pkcs11.lib(self.uri.module())
            token = lib.get_token(
                token_label=self.uri.path.get("token"), token_serial=_serial(self.uri)
            )
            self.session = token.open(user_pin=self.pin)
        except pkcs11.NoSuchToken as exc:
            raise InvalidInput(f"no PKCS#11 token matches {_selector(self.uri)}") from exc
        except pkcs11.MultipleTokensReturned as exc:
            raise InvalidInput(
                f"more than one token matches {_selector(self.uri)}",
                hint="add token=LABEL or serial=... to the URI",
            ) from exc
        except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange) as exc:
            raise SignerError(
                "the token refused the PIN",
                hint="the PIN comes from the URI's pin-source or pin-value, else from "
                "--passphrase-env, --passphrase-file or --ask-passphrase",
            ) from exc
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
            raise SignerError(f"cannot open the PKCS#11 token: {_why(exc)}") from exc
        return self.session

    def __exit__(self, *exc: object) -> None:
        if self.session is not None:
            self.session.close()


def _library() -> Any:
    try:
        import pkcs11
    except ImportError as exc:
        raise SignerError(
            "PKCS#11 signing needs the python-pkcs11 package",
            hint="pip install 'memcrypt[hsm]'",
        ) from exc
    return pkcs11


def _serial(uri: Pkcs11Uri) -> bytes | None:
    serial = uri.path.get("serial")
    return serial.encode() if serial is not None else None


def _selector(uri: Pkcs11Uri) -> str:
    return ";".join(f"{k}={v}" for k, v in uri.path.items() if k in ("token", "serial")) or (
        "the URI (no token= given)"
    )


def _private_key(session: Any, uri: Pkcs11Uri) -> Any:
    import pkcs11

    key_id = uri.path.get("id")
    try:
        return session.get_key(
            object_class=pkcs11.ObjectClass.PRIVATE_KEY,
            label=uri.path.get("object"),
            id=key_id.encode("latin-1") if key_id is not None else None,
        )
    except pkcs11.NoSuchKey as exc:
        raise InvalidInput(
            f"the token has no private key {_key_name(uri)}",
            hint="a PIN is needed to see private keys; list them with "
            "`pkcs11-tool --list-objects --login`",
        ) from exc
    except pkcs11.MultipleObjectsReturned as exc:
        raise InvalidInput(
            f"more than one private key matches {_key_name(uri)}", hint="add id= to the URI"
        ) from exc


def _key_name(uri: Pkcs11Uri) -> str:
    return " ".join(f"{k}={v!r}" for k, v in uri.path.items() if k in ("object", "id"))


def _public_key(private: Any) -> PublicKey:
    """The public half, from the private key object's own public attributes."""
    import pkcs11
    from pkcs11 import Attribute

    if private.key_type == pkcs11.KeyType.RSA:
        n = int.from_bytes(private[Attribute.MODULUS], "big")
        e = int.from_bytes(private[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if private.key_type == pkcs11.KeyType.EC:
        return _ec_public_key(private)
    raise InvalidInput(f"the token's key is {private.key_type.name}; memcrypt signs with RSA or EC")


_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1,
    "secp384r1": ec.SECP384R1,
    "secp521r1": ec.SECP521R1,
}


def _ec_public_key(private: Any) -> ec.EllipticCurvePublicKey:
    """EC private key objects hold no point; the public key object beside it does."""
    import pkcs11
    from asn1crypto.core import OctetString
    from asn1crypto.keys import ECDomainParameters
    from pkcs11 import Attribute

    session = private.session
    try:
        public = session.get_key(object_class=pkcs11.ObjectClass.PUBLIC_KEY, id=private.id)
    except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned) as exc:
        raise InvalidInput("no single EC public key object with the private key's id") from exc
    curve_name = ECDomainParameters.load(public[Attribute.EC_PARAMS]).chosen.native
    curve = _CURVES.get(curve_name)
    if curve is None:
        raise InvalidInput(f"the token's EC key is on {curve_name}, which memcrypt cannot use")
    point = OctetString.load(public[Attribute.EC_POINT]).native
    return ec.EllipticCurvePublicKey.from_encoded_point(curve(), point)


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
