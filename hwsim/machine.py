"""A simulated machine: a directory with machine.toml (part and BIOS) and state.db.

``Machine`` is the public facade every tool uses; nothing else reads state.db. Each
command runs one :meth:`Machine.transaction`, so a killed command leaves the previous
state and concurrent commands on one machine queue for each other.

The machine's lock is state.db's write lock (``BEGIN IMMEDIATE``). machine.toml is
changed only under it, by :meth:`Machine.change_config`, as a redo log: the new text is
first committed to state.db together with any other state of the change (``machine/
toml.staged``), then written to machine.toml, then the staged copy is dropped. A kill at
any point leaves the old settings and state, or the new ones: whoever next takes the lock
(every write, and every open that finds a staged copy) finishes writing machine.toml.

What lives where in state.db (namespaces of the key-value table):

- ``machine``: the profile the machine was made with, the boot counter, machine.toml
  text committed but not yet written (``toml.staged``);
- ``fused``: the per-machine fused root behind :meth:`Machine.fused_secret` (SGX seal and
  provisioning roots, AMD's chip-unique secret), made at init and changed only by reset;
- ``vendor``: the simulated SGX vendor's RSA-3072 signing key (the vendor is not part of
  the machine: ``reset`` keeps it, like Intel's key hash burnt into real parts);
- ``boot.*``: volatile state, emptied by every power cycle (boot root, booted BIOS
  settings, MSRs, memory-encryption key slots, where the PRM is, and whatever other
  modules keep there).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from hwsim import cpu
from hwsim.bios import (
    BiosConfig,
    parse_machine_toml,
    profile_named_in,
    read_machine_toml,
    render_toml,
    write_machine_toml,
)
from hwsim.errors import MachineError
from hwsim.memory import EPC_KEYID, HOST_KEYID, MemoryEngine
from hwsim.prm import PrmMap
from hwsim.profiles import DEFAULT_PROFILE, PROFILES, Profile, get_profile
from hwsim.sgx.arch import mrsigner
from hwsim.store import StateTxn, Store
from memcrypt.cli import program_name
from memcrypt.errors import InvalidInput, MemcryptError
from memcrypt.files import check_replaceable

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = [
    "Machine",
    "Transaction",
    "default_machine_path",
    "open_for_cli",
]

TOML_NAME = "machine.toml"
DB_NAME = "state.db"
_VENDOR_NS = "vendor"
_MACHINE_NS = "machine"
_STAGED_TOML = "toml.staged"


class Transaction(StateTxn):
    """One atomic unit of work on a machine: key-value state, MSRs, DRAM, key slots."""

    def __init__(self, machine: Machine, txn: StateTxn) -> None:
        super().__init__(txn.db)
        self.machine = machine
        self.profile = machine.profile
        p = machine.profile
        self.engine = MemoryEngine(self, p.phys_addr_bits - p.phys_addr_reduction)

    # MSRs and CPUID --------------------------------------------------------------

    def rdmsr(self, index: int) -> int:
        return cpu.rdmsr(self, self.profile, index)

    def wrmsr(self, index: int, value: int) -> None:
        cpu.wrmsr(self, self.profile, index, value)

    def le_pubkey_hash(self) -> bytes:
        """IA32_SGXLEPUBKEYHASH0-3 as EINIT sees them (32 bytes, no RDMSR access rules)."""
        return cpu.le_pubkey_hash(self)

    def booted_config(self) -> BiosConfig:
        """The BIOS settings in force since the last power cycle."""
        raw = self.get("boot.bios", "config")
        if raw is None:
            return self.machine.config
        try:
            table = json.loads(raw)
            if not isinstance(table, dict):
                raise InvalidInput("not a table")
            return BiosConfig.from_table(self.profile, table)
        except (ValueError, InvalidInput) as exc:  # JSONDecodeError, UnicodeDecodeError
            raise self._corrupt("boot.bios/config", exc) from exc

    def cpuid(self, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        return cpu.cpuid(self.profile, self.booted_config(), leaf, subleaf)

    def machine_config(self) -> BiosConfig:
        """machine.toml's settings as this transaction sees them (the next boot's)."""
        path = self.machine.path / TOML_NAME
        staged = self.get(_MACHINE_NS, _STAGED_TOML)
        _, config = read_machine_toml(path) if staged is None else parse_machine_toml(staged, path)
        self.machine.config = config
        return config

    # DRAM through the memory encryption engine ------------------------------------

    def dram_write(self, paddr: int, data: bytes, keyid: int | None) -> None:
        self.engine.write(paddr, data, keyid)

    def dram_read(self, paddr: int, n: int, keyid: int | None) -> bytes:
        return self.engine.read(paddr, n, keyid)

    def physical_read(self, paddr: int, n: int) -> bytes:
        return self.engine.physical_read(paddr, n)

    def physical_write(self, paddr: int, data: bytes) -> None:
        self.engine.physical_write(paddr, data)

    def set_key(self, keyid: int, key: bytes) -> None:
        self.engine.set_key(keyid, key)

    def clear_key(self, keyid: int) -> None:
        self.engine.clear_key(keyid)

    # Secrets ------------------------------------------------------------------------

    def fused_secret(self, label: str) -> bytes:
        return _derive(self._need("fused", "root"), "fused", label)

    def boot_secret(self, label: str) -> bytes:
        return _derive(self._need("boot.secret", "root"), "boot", label)

    def sgx_vendor_private_key(self) -> RSAPrivateKey:
        """The simulated SGX vendor's signing key. For the vendor role module only."""
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
        from cryptography.hazmat.primitives.serialization import load_der_private_key

        try:
            key = load_der_private_key(self._need(_VENDOR_NS, "signing_key"), password=None)
        except ValueError as exc:
            raise self._corrupt(f"{_VENDOR_NS}/signing_key", exc) from exc
        if not isinstance(key, RSAPrivateKey):
            raise MachineError(f"{self.machine.path}: the SGX vendor key is not an RSA key")
        return key

    def sgx_vendor_key_hash(self) -> bytes:
        """SHA-256 of the vendor key's modulus, 384 bytes little-endian (its MRSIGNER)."""
        return self._need(_VENDOR_NS, "mrsigner", size=32)

    def _need(self, ns: str, key: str, *, size: int | None = None) -> bytes:
        value = self.get(ns, key)
        if value is None:
            raise MachineError(f"{self.machine.path}: state.db has no {ns}/{key}")
        if size is not None and len(value) != size:
            raise self._corrupt(f"{ns}/{key}", f"{len(value)} bytes, not {size}")
        return value

    def _corrupt(self, what: str, why: object) -> MachineError:
        return MachineError(f"{self.machine.path / DB_NAME}: {what} is corrupt ({why})")


def _derive(root: bytes, domain: str, label: str) -> bytes:
    return hmac.new(root, f"hwsim {domain}\0{label}".encode(), hashlib.sha256).digest()


class Machine:
    """A simulated machine on disk. Open with :meth:`open`, :meth:`init` or :meth:`default`."""

    def __init__(self, path: Path, profile: Profile, config: BiosConfig, store: Store) -> None:
        self.path = path
        self.profile = profile
        self.config = config
        self._store = store

    # Creating and opening -----------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        profile: str = DEFAULT_PROFILE,
        *,
        vendor_key: RSAPrivateKey | None = None,
    ) -> Machine:
        """Create a machine directory; :class:`MachineError` if one is already there.

        The directory is built under a temporary name and renamed into place, so a
        concurrent creator or a crash never leaves a half-made machine. ``vendor_key``
        injects a pregenerated RSA-3072 e=3 vendor key (tests); by default one is made.
        """
        target = Path(path).absolute()
        part = get_profile(profile)
        if (target / TOML_NAME).exists() or (target / DB_NAME).exists():
            raise MachineError(f"a machine already exists at {target}")
        key_der, mrsigner = _vendor_key(vendor_key)
        real = Path(os.path.realpath(target))  # a symlink to an empty directory is kept
        try:
            real.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{real.name}.", dir=real.parent))
        except OSError as exc:
            raise MachineError(f"cannot create machine {target}: {exc.strerror}") from exc
        try:
            _populate(tmp, part, key_der, mrsigner)
            os.rename(tmp, real)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise MachineError(f"{target} already exists and is not empty") from exc
            raise MachineError(f"cannot create machine {target}: {exc.strerror}") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open(target)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Machine:
        """Open an existing machine; :class:`MachineError` (one line) if unusable."""
        root = Path(path).absolute()
        if not root.exists():
            raise MachineError(f"no machine at {root}", hint=f"create one with: hwsim init {root}")
        if not root.is_dir():
            raise MachineError(f"machine path {root} is not a directory")
        try:
            profile, config = read_machine_toml(root / TOML_NAME)
        except MachineError:
            _refuse_profile_change(root)  # a clearer reason than the first setting it breaks
            raise
        store = Store.open(root / DB_NAME)
        machine = cls(root, profile, config, store)
        try:
            machine._check_profile()
            machine._finish_staged()
        except BaseException:
            store.close()
            raise
        return machine

    @classmethod
    def default(cls) -> Machine:
        """``$HWSIM_MACHINE``, else the user's default machine; made on first use.

        "First use" means the directory is missing or empty (``mktemp -d`` in CI). Several
        processes may race to make it: one wins, the others open what it made.
        """
        path = default_machine_path()
        if not path.exists() or (path.is_dir() and not any(path.iterdir())):
            try:
                machine = cls.init(path)
            except MachineError:
                if not (path / TOML_NAME).exists():
                    raise
            else:
                print(
                    f"{program_name('hwsim')}: created machine {os.path.abspath(path)} "
                    f"(profile {machine.profile.name})",
                    file=sys.stderr,
                    flush=True,
                )
                return machine
        return cls.open(path)

    def _check_profile(self) -> None:
        with self.transaction(write=False) as txn:
            made = txn.get("machine", "profile")
        made_as = None if made is None else made.decode("utf-8", "replace")
        if made_as is not None and made_as != self.profile.name:
            raise MachineError(
                f"{self.path / TOML_NAME} names profile {self.profile.name!r} but the "
                f"machine was made as {made_as!r}",
                hint="a machine's part is fixed; make another with hwsim init --profile",
            )

    def _finish_staged(self) -> None:
        """Write a machine.toml change committed by a command killed before writing it."""
        with self.transaction(write=False) as txn:
            staged = txn.get(_MACHINE_NS, _STAGED_TOML)
        if staged is not None:
            with self.transaction() as txn:
                self._settle(txn)

    def _settle(self, txn: Transaction) -> BiosConfig:
        """Under the lock: machine.toml as committed, written out if it is still staged."""
        config = txn.machine_config()
        staged = txn.get(_MACHINE_NS, _STAGED_TOML)
        if staged is not None:
            write_machine_toml(self.path / TOML_NAME, self.profile, config)
            txn.delete(_MACHINE_NS, _STAGED_TOML)
        return config

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Transactions ---------------------------------------------------------------------

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Transaction]:
        """One atomic SQLite transaction; nested calls join the outer one."""
        with self._store.transaction(write=write) as db:
            yield Transaction(self, StateTxn(db))

    @property
    def schema_version(self) -> int:
        return self._store.schema_version

    # Secrets, boot, reset -----------------------------------------------------------

    def fused_secret(self, label: str) -> bytes:
        """32 bytes tied to this machine's fuses: kept by power cycles, changed by reset."""
        with self.transaction(write=False) as txn:
            return txn.fused_secret(label)

    def boot_secret(self, label: str) -> bytes:
        """32 bytes made anew at every power cycle."""
        with self.transaction(write=False) as txn:
            return txn.boot_secret(label)

    def sgx_vendor_key_hash(self) -> bytes:
        with self.transaction(write=False) as txn:
            return txn.sgx_vendor_key_hash()

    @property
    def boot_count(self) -> int:
        with self.transaction(write=False) as txn:
            return _boot_count(txn)

    def cpuid(self, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        with self.transaction(write=False) as txn:
            return txn.cpuid(leaf, subleaf)

    def power_cycle(self) -> None:
        """Power off and on: volatile state is lost, the BIOS applies machine.toml anew."""
        with self.transaction() as txn:
            config = self._settle(txn)
            txn.wipe(volatile_only=True)
            _boot(txn, self.profile, config)

    def reset(self) -> None:
        """Back to factory state: new fused secrets, empty DRAM, then a power-on.

        machine.toml (the owner's BIOS settings) and the SGX vendor's key are kept.
        """
        with self.transaction() as txn:
            config = self._settle(txn)
            txn.wipe(volatile_only=False, keep=(_VENDOR_NS,))
            _factory(txn, self.profile)
            _boot(txn, self.profile, config)

    def change_config(self, change: Callable[[Transaction, BiosConfig], BiosConfig]) -> BiosConfig:
        """Read-modify-write machine.toml under the machine's lock, as one change.

        ``change`` gets the transaction and the settings as they are now, may change other
        state in the same transaction, and returns the new settings. The settings and that
        state are committed together; then machine.toml is written (see the module doc).
        """
        if self._store.in_transaction:
            raise RuntimeError("machine.toml changes commit on their own, not inside a transaction")
        with self.transaction() as txn:
            config = change(txn, self._settle(txn))
            try:
                check_replaceable(self.path / TOML_NAME)  # a refusal must come before the commit
            except MemcryptError as exc:
                raise MachineError(str(exc)) from exc
            txn.put(_MACHINE_NS, _STAGED_TOML, render_toml(self.profile, config).encode())
        with self.transaction() as txn:
            return self._settle(txn)

    def set_config(self, key: str, text: str) -> BiosConfig:
        """Change one BIOS setting in machine.toml; it takes effect at the next power cycle."""
        return self.change_config(lambda _txn, now: now.with_setting(self.profile, key, text))


def _vendor_key(key: RSAPrivateKey | None) -> tuple[bytes, bytes]:
    """(PKCS#8 DER, MRSIGNER) of the vendor key, making an RSA-3072 e=3 key if none."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if key is None:
        key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    numbers = key.public_key().public_numbers()
    if key.key_size != 3072 or numbers.e != 3:
        raise InvalidInput("the SGX vendor key must be RSA-3072 with exponent 3")
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return der, mrsigner(numbers.n)


def _populate(tmp: Path, profile: Profile, key_der: bytes, mrsigner: bytes) -> None:
    config = BiosConfig.defaults(profile)
    write_machine_toml(tmp / TOML_NAME, profile, config)
    store = Store.create(tmp / DB_NAME)
    try:
        with store.transaction() as db:
            txn = StateTxn(db)
            txn.put(_VENDOR_NS, "signing_key", key_der)
            txn.put(_VENDOR_NS, "mrsigner", mrsigner)
            _factory(txn, profile)
            _boot(txn, profile, config)
    finally:
        store.close()


def _factory(txn: StateTxn, profile: Profile) -> None:
    txn.put("machine", "profile", profile.name.encode())
    txn.put("fused", "root", os.urandom(32))


def _boot_count(txn: StateTxn) -> int:
    raw = txn.get("machine", "boot_count")
    return 0 if raw is None else int.from_bytes(raw, "little")


def _boot(txn: StateTxn, profile: Profile, config: BiosConfig) -> None:
    """Power-on: count the boot, make boot-time keys, let the BIOS program the MSRs."""
    txn.put("machine", "boot_count", (_boot_count(txn) + 1).to_bytes(8, "little"))
    txn.put("boot.secret", "root", os.urandom(32))
    txn.put("boot.bios", "config", json.dumps(config.as_dict()).encode())
    vendor_hash = txn.get(_VENDOR_NS, "mrsigner") or bytes(32)
    if len(vendor_hash) != 32:
        raise MachineError(f"state.db: {_VENDOR_NS}/mrsigner is corrupt ({len(vendor_hash)} bytes)")
    cpu.bios_boot(txn, profile, config, vendor_hash)
    engine = MemoryEngine(txn, profile.phys_addr_bits - profile.phys_addr_reduction)
    if profile.sme and config.sme_enabled:
        engine.set_key(HOST_KEYID, os.urandom(16))  # the SME key, never leaves the SoC
    if profile.sgx1 and config.sgx_enabled:
        engine.set_key(EPC_KEYID, os.urandom(16))
        engine.reserve_prm(PrmMap.at_boot(profile, config.epc_size))


def default_machine_path() -> Path:
    """``$HWSIM_MACHINE``, else ``$XDG_DATA_HOME/hwsim/default`` (``~/.local/share``)."""
    explicit = os.environ.get("HWSIM_MACHINE")
    if explicit:
        return Path(explicit).absolute()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "hwsim" / "default"


def _refuse_profile_change(root: Path) -> None:
    """Raise the profile-change error if machine.toml names another part than state.db."""
    named = profile_named_in(root / TOML_NAME)
    if named not in PROFILES or not (root / DB_NAME).is_file():
        return  # nothing to explain, or the unknown name is the clearer error
    try:
        store = Store.open(root / DB_NAME)
    except MachineError:
        return
    try:
        with store.transaction(write=False) as db:
            made = StateTxn(db).get("machine", "profile")
    except MachineError:
        return
    finally:
        store.close()
    if made is not None and made.decode("utf-8", "replace") != named:
        raise MachineError(
            f"{root / TOML_NAME} names profile {named!r} but the machine was made as "
            f"{made.decode('utf-8', 'replace')!r}",
            hint="a machine's part is fixed; make another with hwsim init --profile",
        )


def open_for_cli(path: str | os.PathLike[str] | None) -> Machine:
    """The machine a command works on: ``--machine DIR`` if given, else the default."""
    return Machine.default() if path is None else Machine.open(path)
