"""A debugger for debug enclaves: ECALLs, and EDBGRD/EDBGWR reads and writes between them.

    with DebugSession.open("oracle.signed.elf") as dbg:
        dbg.run(["call generate", "read seed 32"])

A session loads the enclave in this process (enclaves live in the process that loads
them) and runs commands, one a line, as a small script would:

- ``call ENTRY [--in-text T | --in-hex H]``: one ECALL, its output;
- ``read ADDRESS LEN``: LEN bytes of enclave memory, read with EDBGRD;
- ``write ADDRESS HEX``: bytes written with EDBGWR;
- ``break ADDRESS``: an int3 written with EDBGWR; the next ECALL that reaches it stops
  there (the CPU drops code translated from the old bytes), and the session reports it;
- ``continue``: resume the stopped ECALL, as sgx-gdb does: the original byte goes back
  with EDBGWR, the RIP the AEX saved in the thread's SSA frame (found from TCS.OSSA and
  TCS.CSSA, read with EDBGRD) moves back onto it, since int3 traps after itself, the
  thread is ERESUMEd for that one instruction, the int3 is written again, and the thread
  runs on; the call completes with its own result or stops at the next breakpoint;
- ``step``: the same for one instruction (ERESUME with a budget of one);
- ``regs``: the stopped thread's registers as the AEX saved them in its SSA frame, read
  with EDBGRD (after an int3, RIP is one past it).

ADDRESS is an offset in the enclave (0 is its base, as the image's symbols are linked), a
symbol of the image, or ``symbol+offset``. EDBGRD and EDBGWR work only on an enclave whose
SECS has ATTRIBUTES.DEBUG set (SDM vol. 3D 38.x; ``shared/reference/sim.md`` 3.7): a
production enclave is refused when the session opens, with the CPU's own reason. While a
call is stopped, memory can be read and written, and other ECALLs wait for ``continue``.
"""

from __future__ import annotations

import shlex
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwsim.sgx.arch import GPRSGX_REGS, GPRSGX_SIZE, PAGE_SIZE, Tcs
from hwsim.sgx.errors import SgxError
from sgxtool.elffile import ElfFile
from sgxtool.errors import ElfError, SgxToolError, UsageError
from sgxtool.runtime import Enclave, EnclaveCallError, EnclaveStopped

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import TextIO

    from hwsim.machine import Machine

__all__ = ["DebugSession", "Step", "read_script"]

_INT3 = b"\xcc"
_MAX_READ = 1 << 20
_MAX_SCRIPT = 1 << 20


@dataclass(frozen=True)
class Step:
    """What one command did: ``kind`` is call, read, write, break or stopped (a call or a
    continue that stopped at an int3)."""

    command: str
    kind: str
    address: int | None = None
    data: bytes = b""
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"command": self.command, "kind": self.kind}
        if self.address is not None:
            out["address"] = f"{self.address:#x}"
        if self.kind in ("call", "read"):
            out["hex"] = self.data.hex()
        if self.kind == "regs":
            out["registers"] = {name: f"{value:#x}" for name, value in self.registers().items()}
        if self.detail:
            out["detail"] = self.detail
        return out

    def registers(self) -> dict[str, int]:
        """A ``regs`` step's registers, by name."""
        values = struct.unpack_from(f"<{len(GPRSGX_REGS)}Q", self.data)
        return dict(zip(GPRSGX_REGS, values, strict=True))


@dataclass
class DebugSession:
    """One debug enclave loaded in this process, and the breakpoints set in it."""

    enclave: Enclave
    symbols: dict[str, int]
    breakpoints: dict[int, bytes] = field(default_factory=dict)  # offset -> original byte
    stopped_at: int | None = None  # offset of the instruction the stopped call is at
    after_int3: bool = False  # the saved RIP is one past stopped_at (an int3 trapped)

    @classmethod
    def open(
        cls, image: str | Path, *, machine: Machine | None = None, console: TextIO | None = None
    ) -> DebugSession:
        """Load ``image``; refused unless EDBGRD may read it (a debug enclave)."""
        enclave = Enclave.load(image, machine=machine, console=console)
        try:
            tcs = enclave.layout.threads[0].tcs
            enclave.device.debug_read(tcs, 8)  # the CPU says whether it may be debugged
        except SgxError as exc:
            enclave.close()
            raise SgxToolError(
                f"cannot debug {image}: {exc}",
                hint="EDBGRD/EDBGWR work only on enclaves signed with DEBUG=1 "
                "(enclave.toml: debug = true); production enclaves cannot be debugged",
            ) from exc
        enclave.stop_at_breakpoints = True
        return cls(enclave, _symbols(image))

    def close(self) -> None:
        self.enclave.close()

    def __enter__(self) -> DebugSession:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- commands -------------------------------------------------------------------------
    def run(self, lines: list[str]) -> list[Step]:
        """Run the commands in order; each one's result."""
        return [self.command(line) for line in lines if line.strip() and not _comment(line)]

    def command(self, line: str) -> Step:
        words = _split(line)
        verb, args = words[0], words[1:]
        handler = {"call": self._call, "read": self._read, "write": self._write,
                   "break": self._break, "continue": self._continue, "step": self._step,
                   "regs": self._regs}.get(verb)  # fmt: skip
        if handler is None:
            raise UsageError(f"{line!r}: unknown command {verb!r} "
                             "(call, read, write, break, continue, step, regs)")  # fmt: skip
        return handler(line, args)

    def address(self, text: str) -> int:
        """An enclave offset from a number, a symbol, or symbol+offset."""
        name, _, extra = text.partition("+")
        base = self.symbols.get(name)
        try:
            if base is None:
                base, extra = int(name, 0), extra or "0"
            return base + int(extra or "0", 0)
        except ValueError:
            raise UsageError(f"{text!r} is neither an offset nor a symbol of the image") from None

    def read(self, address: int, length: int) -> bytes:
        """Enclave memory with EDBGRD; breakpoints show the original bytes."""
        data = bytearray(self.enclave.device.debug_read(address, length))
        for at, byte in self.breakpoints.items():
            if address <= at < address + length:
                data[at - address] = byte[0]
        return bytes(data)

    def _call(self, line: str, args: list[str]) -> Step:
        if not args:
            raise UsageError(f"{line!r}: call ENTRY [--in-text T | --in-hex H]")
        data = _call_input(line, args[1:])
        return self._until_stop(line, lambda: self.enclave.call(args[0], data))

    def _continue(self, line: str, args: list[str]) -> Step:
        self._stopped_call(line, args)
        if self.stopped_at in self.breakpoints:
            step = self._step_over(line)
            if step.kind != "stopped" or self.after_int3:  # it left, or met another int3
                return step
        return self._until_stop(line, self.enclave.resume)

    def _step(self, line: str, args: list[str]) -> Step:
        self._stopped_call(line, args)
        if self.stopped_at in self.breakpoints:
            return self._step_over(line)
        return self._until_stop(line, lambda: self.enclave.resume(step=True))

    def _stopped_call(self, line: str, args: list[str]) -> int:
        """The TCS of the stopped call (refused when there is none, or with arguments)."""
        if args:
            raise UsageError(f"{line!r}: takes no arguments")
        stopped = self.enclave.stopped
        if stopped is None:
            raise SgxToolError(f"{line!r}: no call is stopped at a breakpoint")
        return stopped.tcs

    def _step_over(self, line: str) -> Step:
        """Run the instruction under the breakpoint the call is stopped at, alone: the
        original byte back, the saved RIP onto it if the int3 trapped, one instruction
        (ERESUME with a budget of one), then the int3 again."""
        at, device = self.stopped_at, self.enclave.device
        assert at is not None
        stopped = self.enclave.stopped
        assert stopped is not None
        device.debug_write(at, self.breakpoints[at])
        if self.after_int3:
            rip_at = self.gpr_offset(stopped.tcs) + 8 * GPRSGX_REGS.index("rip")
            rip = struct.unpack("<Q", device.debug_read(rip_at, 8))[0]
            device.debug_write(rip_at, struct.pack("<Q", rip - 1))
        try:
            return self._until_stop(line, lambda: self.enclave.resume(step=True))
        finally:
            device.debug_write(at, _INT3)

    def _until_stop(self, line: str, run: Callable[[], bytes]) -> Step:
        """Run a call (or its rest) until it returns, stops at an int3 or ends a step."""
        self.stopped_at = None
        try:
            out = run()
        except EnclaveStopped as exc:
            # int3 is a trap: the thread stopped one byte after it (SDM vol. 3A 6.5).
            at = exc.rip - self.enclave.base - (1 if exc.int3 else 0)
            self.stopped_at, self.after_int3 = at, exc.int3
            if not exc.int3:
                return Step(line, "stopped", at, detail=f"stepped to {at:#x}")
            what = "breakpoint" if at in self.breakpoints else "an int3 of the enclave's own"
            return Step(line, "stopped", at, detail=f"stopped at {what} {at:#x}")
        except EnclaveCallError as exc:
            return Step(line, "call", detail=str(exc))
        return Step(line, "call", data=out)

    def _regs(self, line: str, args: list[str]) -> Step:
        gpr = self.gpr_offset(self._stopped_call(line, args))
        return Step(line, "regs", gpr, self.enclave.device.debug_read(gpr, GPRSGX_SIZE))

    def gpr_offset(self, tcs: int) -> int:
        """Where the last AEX of thread ``tcs`` saved its registers: TCS.OSSA and TCS.CSSA,
        read with EDBGRD, name the frame; the GPR area is its last bytes (as sgx-gdb finds
        it)."""
        device = self.enclave.device
        head = device.debug_read(tcs - self.enclave.base, 32)  # through OSSA, CSSA, NSSA
        found = Tcs.unpack(head.ljust(PAGE_SIZE, b"\0"))
        ossa, cssa = found.ossa, found.cssa
        if cssa == 0:
            raise SgxToolError("the thread has no saved state (TCS.CSSA is 0)")
        frame = device.enclave.secs.ssaframesize * PAGE_SIZE
        return ossa + cssa * frame - GPRSGX_SIZE

    def _read(self, line: str, args: list[str]) -> Step:
        if len(args) != 2:
            raise UsageError(f"{line!r}: read ADDRESS LEN")
        address, length = self.address(args[0]), _int(args[1], line)
        if not 0 < length <= _MAX_READ:
            raise UsageError(f"{line!r}: LEN must be 1 to {_MAX_READ}")
        return Step(line, "read", address, self.read(address, length))

    def _write(self, line: str, args: list[str]) -> Step:
        if len(args) != 2:
            raise UsageError(f"{line!r}: write ADDRESS HEX")
        address = self.address(args[0])
        try:
            data = bytes.fromhex(args[1])
        except ValueError:
            raise UsageError(f"{line!r}: {args[1]!r} is not hex bytes") from None
        self.enclave.device.debug_write(address, data)
        return Step(line, "write", address, data, f"wrote {len(data)} bytes with EDBGWR")

    def _break(self, line: str, args: list[str]) -> Step:
        if len(args) != 1:
            raise UsageError(f"{line!r}: break ADDRESS")
        address = self.address(args[0])
        if address not in self.breakpoints:
            self.breakpoints[address] = self.enclave.device.debug_read(address, 1)
            self.enclave.device.debug_write(address, _INT3)
        return Step(line, "break", address, detail="int3 written with EDBGWR")


def read_script(name: str) -> list[str]:
    """The command lines of a script file (``-``: standard input)."""
    from memcrypt.cli import read_input

    raw = read_input(name, "debug script", _MAX_SCRIPT)
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"{name}: the debug script is not UTF-8 text") from None


def _comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _split(line: str) -> list[str]:
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"{line!r}: {exc}") from None
    if not words:
        raise UsageError("an empty debug command")
    return words


def _int(text: str, line: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"{line!r}: {text!r} is not a number") from None


def _call_input(line: str, opts: list[str]) -> bytes:
    if not opts:
        return b""
    if len(opts) != 2 or opts[0] not in ("--in-text", "--in-hex"):
        raise UsageError(f"{line!r}: call ENTRY [--in-text T | --in-hex H]")
    if opts[0] == "--in-text":
        return opts[1].encode()
    try:
        return bytes.fromhex(opts[1])
    except ValueError:
        raise UsageError(f"{line!r}: {opts[1]!r} is not hex bytes") from None


def _symbols(image: str | Path) -> dict[str, int]:
    """The image's symbols and their enclave offsets (the ELF is linked at offset 0)."""
    try:
        with open(image, "rb") as f:
            elf = ElfFile(f)
            table = elf.section(".symtab")
            if table is None or not table.is_symbol_table:
                return {}
            return {s.name: s.st_value for s in elf.symbols(table) if s.name}
    except (OSError, ElfError) as exc:
        raise SgxToolError(f"cannot read the symbols of {image}: {exc}") from exc
