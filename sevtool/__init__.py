"""sevtool: AMD SEV platform, guest-owner and SME management."""

from __future__ import annotations

from memcrypt.cli import lazy_attr
from sevtool.errors import SevToolError

__version__ = "0.1.0"

_LAZY = {
    # platform management (sevtool.platform)
    "PlatformInfo": "sevtool.platform",
    "export_chain": "sevtool.platform",
    "factory_reset": "sevtool.platform",
    "get_id": "sevtool.platform",
    "pek_cert_import": "sevtool.platform",
    "pek_csr": "sevtool.platform",
    "platform_status": "sevtool.platform",
    "provision": "sevtool.platform",
    "rotate": "sevtool.platform",
    # the platform owner's key: a key file or a PKCS#11 token (sevtool.owner)
    "OwnerKey": "sevtool.owner",
    "generate_oca": "sevtool.owner",
    "load_owner_key": "sevtool.owner",
    "open_owner_signer": "sevtool.owner",
    "self_signed_oca": "sevtool.owner",
    "sign_pek_csr": "sevtool.owner",
    # certificate chains: files (sevtool.chainfiles), verification (sevtool.chain), roots
    "Chain": "sevtool.chainfiles",
    "load_chain": "sevtool.chainfiles",
    "read_chain_file": "sevtool.chainfiles",
    "write_chain": "sevtool.chainfiles",
    "write_chain_dir": "sevtool.chainfiles",
    "ChainReport": "sevtool.chain",
    "ChainVerificationError": "sevtool.chain",
    "verify_chain": "sevtool.chain",
    # the guest owner's session, measurement and secret (sevtool.session, .measurement, .secret)
    "create_session": "sevtool.session",
    "explain_launch_start": "sevtool.session",
    "load_platform_pdh": "sevtool.session",
    "read_session_files": "sevtool.session",
    "read_transport_keys": "sevtool.session",
    "GuestImage": "sevtool.measurement",
    "MeasurementMismatch": "sevtool.measurement",
    "PlatformVersion": "sevtool.measurement",
    "build_measurement": "sevtool.measurement",
    "launch_digest": "sevtool.measurement",
    "verify_measurement": "sevtool.measurement",
    "build_packet": "sevtool.secret",
    "open_packet": "sevtool.secret",
    "Roots": "sevtool.roots",
    "amd_roots": "sevtool.roots",
}

__all__ = ["SevToolError", "__version__", *_LAZY]  # noqa: PLE0604

__getattr__ = lazy_attr(__name__, _LAZY)
