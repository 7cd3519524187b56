"""Soak: many commands against one machine at once, some killed with SIGKILL, then checks.

WORKERS threads each run the command-line programs as separate processes, one after
another, picking at random: sgxtool sign, run and token; hwsim config set, sgx
launch-control set, vendor approve and power-cycle; sevtool rotate, provision, guest
launch and guest decommission. A
random share of the processes is SIGKILLed part-way. Afterwards:

- every acknowledged write is present: each approved signer is on the vendor allow-list;
  the BIOS epc_size and the launch policy are the value of a command that was not
  overtaken by a later acknowledged one (a lost update fails this);
- the launch policy is whole: machine.toml's settings and state.db's owner allow-list are
  the pair one command wrote (old or new, never neither);
- every signed image a worker was told was written verifies;
- state.db passes ``PRAGMA integrity_check``, and hwsim/sevtool still read the machine.

    python bench/soak.py                 # 8 workers, 1 minute
    python bench/soak.py --minutes 10 --kill-rate 0.3

Exit status 0 when every check holds; the figures are printed (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sgxtool import sdkinfo  # noqa: E402

HELLO = REPO / "examples" / "hello"
PROGRAMS = {p: f"from {p}._cli import main; main()" for p in ("sgxtool", "hwsim", "sevtool")}
# Weights of the operations in the mix.
MIX = {
    "sign": 2,
    "run": 2,
    "token": 1,
    "config": 2,
    "launch": 2,
    "approve": 1,
    "power": 1,
    "rotate": 1,
    "provision": 1,
    "guest": 1,
    "decommission": 1,
}


@dataclass
class Op:
    """One command run: what it wrote (``value``), when, and how it ended."""

    kind: str
    value: object
    start: float
    end: float = 0.0
    outcome: str = ""  # acked, refused, killed, failed
    detail: str = ""


@dataclass
class Soak:
    root: Path
    deadline: float
    kill_rate: float
    ops: list[Op] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0

    @property
    def machine(self) -> Path:
        return self.root / "machine"

    def unique(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter


def cli(program: str, *args: str) -> list[str]:
    return [sys.executable, "-c", PROGRAMS[program], *args]


def setup(root: Path, key: Path | None) -> str:
    """The machine, an enclave signed with ``key`` (default: a fresh one), an OCA; the
    signer's MRSIGNER."""
    env = _env()
    run = [
        cli("hwsim", "init", str(root / "machine")),
        cli("sevtool", "generate", str(root / "oca.cert"), str(root / "oca.key")),
    ]
    if key is None:
        run.append(cli("sgxtool", "keygen", str(root / "key.pem")))
    else:
        (root / "key.pem").write_bytes(key.read_bytes())
    for argv in run:
        subprocess.run(argv, check=True, env=env, capture_output=True)
    (root / "guest.bin").write_bytes(bytes(64 << 10))  # a guest image to launch (zeros)
    elf = root / "hello.elf"
    cc = ["cc", *sdkinfo.cflags(), "-O2", str(HELLO / "hello.c"), *sdkinfo.ldflags(), "-o"]
    subprocess.run([*cc, str(elf)], check=True)
    (root / "enclave.toml").write_text((HELLO / "enclave.toml").read_text())
    sign = cli("sgxtool", "sign", str(elf), "-k", str(root / "key.pem"), "--json")
    out = subprocess.run([*sign, "-o", str(root / "hello.signed.elf")], env=env,
                         check=True, capture_output=True)  # fmt: skip
    return str(json.loads(out.stdout)["mrsigner"])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}


def command(soak: Soak, worker: int, kind: str, signer: str) -> tuple[list[str], object]:
    """The argv of one operation and the value it writes (None: nothing to check)."""
    m, root = ["--machine", str(soak.machine)], soak.root
    image = str(root / "hello.signed.elf")
    n = soak.unique()
    if kind == "sign":
        out = str(root / f"signed-{worker}.elf")
        return cli("sgxtool", "sign", str(root / "hello.elf"), "-k", str(root / "key.pem"),
                   "-o", out), out  # fmt: skip
    if kind == "run":
        return cli("sgxtool", "run", image, "hello", "--in-text", f"w{worker}", *m), None
    if kind == "token":
        return cli("sgxtool", "token", image, *m), None
    if kind == "config":  # 16M and up, so that enclaves still fit after a power cycle
        size = (16 << 20) + 4096 * n
        return cli("hwsim", *m, "config", "set", "epc_size", f"{size // 1024}K"), size
    if kind == "launch":
        if n % 5 == 0:
            return cli("hwsim", *m, "sgx", "launch-control", "set", "vendor-key"), ("vendor",)
        extra = f"{n:064x}"
        argv = ["flc-locked", "--allow", signer, "--allow", extra]
        return cli("hwsim", *m, "sgx", "launch-control", "set", *argv), (signer, extra)
    if kind == "approve":
        who = f"{n:064x}"
        return cli("hwsim", *m, "vendor", "approve", who), who
    if kind == "power":
        return cli("hwsim", *m, "power-cycle"), None
    if kind == "rotate":
        return cli("sevtool", "rotate", *(["--pek"] if n % 2 else []), *m), None
    if kind == "guest":  # a guest launch: LAUNCH_START and UPDATE_DATA in one command
        return cli("sevtool", *m, "guest", "launch", str(root / "guest.bin"), "--policy",
                   "0x1", "--name", f"g{n}"), None  # fmt: skip
    if kind == "decommission":  # some handle; none there is a refusal, counted as one
        return cli("sevtool", *m, "guest", "decommission", "--guest", str(n % 8 + 1)), None
    return cli("sevtool", "provision", str(root / "oca.cert"), str(root / "oca.key"), *m), None


def _refusal(op: Op, code: int, text: str) -> bool:
    """One error line, exit 1; or a decommission of a guest that is gone (a power cycle or
    another worker ended it first), which the CLI rightly calls bad input (exit 2)."""
    if "Traceback" in text or len(text.splitlines()) > 2:
        return False
    return code == 1 or (code == 2 and op.kind == "decommission" and "no SEV guest" in text)


def run_op(soak: Soak, argv: list[str], op: Op, rng: random.Random) -> None:
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if rng.random() < soak.kill_rate:
        time.sleep(rng.uniform(0.0, 1.5))  # a command takes about 0.3-2 s on a busy machine
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    op.end = time.monotonic()
    text = err.decode(errors="replace").strip()
    if proc.returncode == -signal.SIGKILL:
        op.outcome = "killed"
    elif proc.returncode == 0:
        op.outcome = "acked"
    elif _refusal(op, proc.returncode, text):
        op.outcome, op.detail = "refused", text.splitlines()[0][:90] if text else ""
    else:
        op.outcome, op.detail = "failed", f"exit {proc.returncode}: {text[-400:]}"


def worker(soak: Soak, index: int, signer: str, seed: int) -> None:
    rng = random.Random(seed * 1000 + index)
    kinds, weights = list(MIX), list(MIX.values())
    while time.monotonic() < soak.deadline:
        kind = rng.choices(kinds, weights)[0]
        argv, value = command(soak, index, kind, signer)
        op = Op(kind, value, time.monotonic())
        run_op(soak, argv, op, rng)
        with soak.lock:
            soak.ops.append(op)


# -- checks ---------------------------------------------------------------------------------


def register_holds(ops: list[Op], kind: str, final: object, initial: object) -> bool:
    """``final`` was written by an op that no acknowledged op of ``kind`` followed."""
    mine = [o for o in ops if o.kind == kind and o.outcome in ("acked", "killed")]
    acked = [o for o in mine if o.outcome == "acked"]
    writers = [o for o in mine if o.value == final]
    if not writers:
        return final == initial and not acked
    return any(not any(y.start > x.end for y in acked) for x in writers)


def check(soak: Soak, signer: str, initial_epc: int) -> list[str]:
    problems: list[str] = []
    sys.path.insert(0, str(REPO))
    from hwsim.machine import Machine
    from hwsim.sgx.launch import owner_allow_list, read_allow_list

    db = sqlite3.connect(soak.machine / "state.db")
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    if integrity != "ok":
        problems.append(f"PRAGMA integrity_check: {integrity}")
    with Machine.open(soak.machine) as machine, machine.transaction(write=False) as txn:
        config = txn.machine_config()
        allow = owner_allow_list(txn)
        approved = set(read_allow_list(txn).signers)
    approvals = [o for o in soak.ops if o.kind == "approve" and o.outcome == "acked"]
    problems += [
        f"lost: vendor approval of {o.value}"
        for o in approvals
        if bytes.fromhex(str(o.value)) not in approved
    ]
    if not register_holds(soak.ops, "config", config.epc_size, initial_epc):
        problems.append(f"lost update: epc_size is {config.epc_size}")
    policy: tuple[str, ...] = (
        ("vendor",)
        if config.lc_locked and config.le_pubkey_hash is None and not allow
        else tuple(s.hex() for s in allow)
    )
    if not config.lc_locked and not allow:
        policy = ("flc-open",)  # neither the old policy nor a new one: never set by the mix
    if config.lc_locked != (policy == ("vendor",)):
        problems.append(f"torn policy: lc_locked={config.lc_locked}, allow-list {policy}")
    if not register_holds(soak.ops, "launch", policy, ("flc-open",)):
        problems.append(f"lost or torn launch policy: {policy}")
    problems += _check_outputs(soak)
    for argv in (cli("hwsim", "--machine", str(soak.machine), "status"),
                 cli("sevtool", "--machine", str(soak.machine), "show"),
                 cli("sevtool", "--machine", str(soak.machine), "guest", "list")):  # fmt: skip
        done = subprocess.run(argv, env=_env(), capture_output=True, check=False)
        if done.returncode:
            problems.append(f"{argv[3:]} failed: {done.stderr.decode()[-300:]}")
    return problems


def _check_outputs(soak: Soak) -> list[str]:
    problems = []
    acked = {o.value for o in soak.ops if o.kind == "sign" and o.outcome == "acked"}
    for out in sorted(str(v) for v in acked):
        verify = cli("sgxtool", "verify", out)
        if subprocess.run(verify, env=_env(), capture_output=True, check=False).returncode:
            problems.append(f"acknowledged signed image {out} does not verify")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, help="overrides --minutes (quick runs)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--kill-rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--key", type=Path, help="RSA-3072 e=3 signing key (default: new)")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="memcrypt-soak-") as tmp:
        root = Path(tmp)
        signer = setup(root, args.key)
        from hwsim.machine import Machine

        with Machine.open(root / "machine") as machine:
            initial_epc = machine.config.epc_size
        soak = Soak(root, time.monotonic() + seconds, args.kill_rate)
        threads = [
            threading.Thread(target=worker, args=(soak, i, signer, args.seed))
            for i in range(args.workers)
        ]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        problems = check(soak, signer, initial_epc)
        problems += [f"{o.kind} failed: {o.detail}" for o in soak.ops if o.outcome == "failed"]
        report(soak, elapsed, args.workers, problems)
    return 1 if problems else 0


def report(soak: Soak, elapsed: float, workers: int, problems: list[str]) -> None:
    outcomes = Counter(o.outcome for o in soak.ops)
    kinds = Counter(o.kind for o in soak.ops)
    print(f"soak: {workers} workers, {elapsed:.0f} s, {len(soak.ops)} operations "
          f"({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})")  # fmt: skip
    print(f"  acknowledged {outcomes['acked']}, refused {outcomes['refused']}, "
          f"killed {outcomes['killed']}, failed {outcomes['failed']}")  # fmt: skip
    reasons = Counter(o.detail for o in soak.ops if o.outcome == "refused")
    for reason, n in reasons.most_common(6):
        print(f"  refused x{n}: {reason}")
    print(f"  losses {len(problems)}")
    for problem in problems:
        print(f"  PROBLEM: {problem}")


if __name__ == "__main__":
    sys.exit(main())
