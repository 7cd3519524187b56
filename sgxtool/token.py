"""Launch tokens: an EINITTOKEN for a signed enclave from the machine's Launch Enclave.

On a machine with the vendor-key launch policy (legacy launch control) an enclave whose
signer is not the LE's needs a token, which the vendor's Launch Enclave grants: debug
enclaves for any signer, production enclaves only for signers on the vendor's allow-list
(``shared/reference/sim.md`` 2.2). Elsewhere no token is used, and the refusal says so.
A refusal always names the rule and what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hwsim.sgx.arch import AttributeFlag, Attributes, Einittoken, Sigstruct
from hwsim.sgx.errors import LaunchRefused
from sgxtool.edl import CType, Edl, Function, Param, parse_type, pointer_to
from sgxtool.errors import UsageError
from sgxtool.info import load_sigstruct as load_file

if TYPE_CHECKING:
    from hwsim.machine import Machine
    from sgxtool.intelrt import IntelEnclave

__all__ = ["IntelLaunchEnclave", "TokenGrant", "get_token", "le_token", "load_sigstruct"]


@dataclass(frozen=True)
class TokenGrant:
    """A token and what it was granted for."""

    token: Einittoken
    sigstruct: Sigstruct

    def as_json(self) -> dict[str, object]:
        t = self.token
        return {
            "mrenclave": t.mrenclave.hex(),
            "mrsigner": t.mrsigner.hex(),
            "attributes": {"flags": f"{t.attributes_flags:#x}", "xfrm": f"{t.attributes_xfrm:#x}"},
            "debug": bool(t.attributes_flags & AttributeFlag.DEBUG),
            "le_isvprodid": t.isvprodidle,
            "le_isvsvn": t.isvsvnle,
            "keyid": t.keyid.hex(),
            "mac": t.mac.hex(),
        }


def load_sigstruct(path: str | Path) -> Sigstruct:
    """The SIGSTRUCT of a signed image or of a detached SIGSTRUCT file."""
    loaded = load_file(Path(path))
    if loaded.sigstruct_raw is None:
        raise UsageError(
            f"{path} is an unsigned {loaded.kind.value}: a launch token is for a signed enclave",
            hint="sign it first: sgxtool sign",
        )
    return Sigstruct.unpack(loaded.sigstruct_raw)


def get_token(
    image: str | Path | Sigstruct, machine: Machine, *, attributes: Attributes | None = None
) -> TokenGrant:
    """Ask ``machine``'s Launch Enclave for a token for ``image``.

    ``attributes`` are the SECS attributes the loader will use (default: the SIGSTRUCT's).
    Raises :class:`~hwsim.sgx.errors.LaunchRefused` naming the refusing rule: an
    unapproved production signer, wrong attributes, or a policy that uses no tokens.
    """
    from hwsim.sgx.device import launch_token

    sig = image if isinstance(image, Sigstruct) else load_sigstruct(image)
    return TokenGrant(launch_token(machine, sig, attributes), sig)


# -- a real Launch Enclave: Intel's, run in the simulator ---------------------------------

# psw/ae/le/launch_enclave.edl (ECALL 0 and 1) and common/inc/internal/ae_error.h codes.
_LE_STATUS = {
    37: "LE_UNEXPECTED_ERROR", 38: "LE_INVALID_PARAMETER", 39: "LE_GET_EINITTOKEN_KEY_ERROR",
    40: "LE_INVALID_ATTRIBUTE", 41: "LE_INVALID_PRIVILEGE_ERROR",
    42: "LE_WHITELIST_UNINITIALIZED_ERROR", 43: "LE_CALC_LIC_TOKEN_ERROR",
}  # fmt: skip
_LE_HINTS = {
    42: "a production (non-debug) token needs the LE's white list of signers, which Intel "
    "signs; launch the enclave as debug, or load a white list with --white-list",
    38: "the LE refused its input (a white list it does not accept, e.g. one naming "
    "another LE product id)",
}


def _le_edl() -> Edl:
    def struct_ptr(name: str, size: int, align: int) -> CType:
        return pointer_to(CType(name, size, align, "struct"))

    measurement = struct_ptr("sgx_measurement_t", 32, 1)
    get_token = Function("le_get_launch_token_wrapper", parse_type("int"), (
        Param("mrenclave", measurement, frozenset({"in"})),
        Param("mrsigner", measurement, frozenset({"in"})),
        Param("se_attributes", struct_ptr("sgx_attributes_t", 16, 8), frozenset({"in"})),
        Param("lictoken", struct_ptr("token_t", Einittoken.LAYOUT.size, 8), frozenset({"out"})),
    ), trusted=True, public=True)  # fmt: skip
    white_list = Function("le_init_white_list_wrapper", parse_type("uint32_t"), (
        Param("wl_cert_chain", pointer_to(parse_type("uint8_t")), frozenset({"in"}),
              size="wl_cert_chain_size"),
        Param("wl_cert_chain_size", parse_type("uint32_t")),
    ), trusted=True, public=True)  # fmt: skip
    return Edl([get_token, white_list], [])


class IntelLaunchEnclave:
    """A Launch Enclave built with Intel's SDK (Intel's own, say), running on ``machine``:
    it EINITs without a token only where the machine's launch key hash is its signer."""

    def __init__(self, enclave: IntelEnclave) -> None:
        self.enclave = enclave

    @classmethod
    def load(
        cls, le: str | Path, machine: Machine, le_sig: str | Path | None = None
    ) -> IntelLaunchEnclave:
        """``le``: a signed .so, or an SGXS stream with its SIGSTRUCT in ``le_sig``."""
        from sgxtool.intelrt import IntelEnclave
        from sgxtool.sgxs import read_sgxs

        if le_sig is None:
            return cls(IntelEnclave.load(le, edl=_le_edl(), machine=machine, debug=False))
        layout = read_sgxs(le)
        enclave = IntelEnclave.from_layout(layout, load_sigstruct(le_sig), edl=_le_edl(),
                                           machine=machine, sdk_2_0=True, string_len=False,
                                           debug=False)  # fmt: skip
        return cls(enclave)

    def __enter__(self) -> IntelLaunchEnclave:
        return self

    def __exit__(self, *exc: object) -> None:
        self.enclave.close()

    def init_white_list(self, cert_chain: bytes) -> None:
        """Hand the LE a signed white list (ECALL 1); refused with its status."""
        status = self.enclave.ecall(
            "le_init_white_list_wrapper", wl_cert_chain=cert_chain,
            wl_cert_chain_size=len(cert_chain),
        ).retval  # fmt: skip
        _check_status(status, "refused the white list")

    def get_token(self, sigstruct: Sigstruct, attributes: Attributes) -> Einittoken:
        """An EINITTOKEN for ``sigstruct`` launched with SECS ``attributes`` (ECALL 0)."""
        result = self.enclave.ecall(
            "le_get_launch_token_wrapper", mrenclave=sigstruct.enclavehash,
            mrsigner=sigstruct.mrsigner, se_attributes=attributes.pack(),
        )  # fmt: skip
        _check_status(result.retval, f"refused a token for {sigstruct.enclavehash.hex()}")
        raw = result.outputs["lictoken"]
        assert isinstance(raw, bytes)  # an [out] struct buffer decodes to bytes
        return Einittoken.unpack(raw)


def _check_status(status: object, what: str) -> None:
    if status == 0:
        return
    name = _LE_STATUS.get(status if isinstance(status, int) else -1, "unknown status")
    raise LaunchRefused(
        "the Launch Enclave",
        f"it {what}: {status} ({name})",
        hint=_LE_HINTS.get(status),  # type: ignore[call-overload]
    )


def le_token(
    image: str | Path | Sigstruct,
    machine: Machine,
    le: str | Path,
    *,
    le_sig: str | Path | None = None,
    attributes: Attributes | None = None,
    white_list: bytes | None = None,
) -> TokenGrant:
    """Run the Launch Enclave ``le`` on ``machine`` and ask it for a token for ``image``.

    ``attributes`` default to how sgxtool launches the image: an Intel SDK enclave as
    debug where its SIGSTRUCT allows it, anything else as signed.
    """
    sig = image if isinstance(image, Sigstruct) else load_sigstruct(image)
    if attributes is None:
        attributes = _launch_attributes(image, sig)
    with IntelLaunchEnclave.load(le, machine, le_sig) as enclave:
        if white_list is not None:
            enclave.init_white_list(white_list)
        return TokenGrant(enclave.get_token(sig, attributes), sig)


def _launch_attributes(image: str | Path | Sigstruct, sig: Sigstruct) -> Attributes:
    from sgxtool.intelso import has_metadata

    flags = sig.attributes_flags
    debug_ok = not sig.attributemask_flags & int(AttributeFlag.DEBUG)
    if not isinstance(image, Sigstruct) and has_metadata(image) and debug_ok:
        flags |= int(AttributeFlag.DEBUG)  # as IntelEnclave.load launches it
    return Attributes(flags, sig.attributes_xfrm)
