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
from sgxtool.errors import UsageError
from sgxtool.info import load_sigstruct as load_file

if TYPE_CHECKING:
    from hwsim.machine import Machine

__all__ = ["TokenGrant", "get_token", "load_sigstruct"]


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
