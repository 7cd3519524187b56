"""Long fuzz run of the command-line robustness properties (not part of CI).

Runs ``tests/cli/test_robustness.py`` (sgxtool, sevtool) and
``tests/cli/test_robustness_hwsim.py`` (hwsim machines, sgxtool token and run) with many
more hypothesis examples than CI uses:

    python bench/fuzz_cli.py --examples 5000
    python bench/fuzz_cli.py --examples 500 -k sev     # only the SEV properties
    python bench/fuzz_cli.py --examples 500 -k hwsim   # only the hwsim file

Every property checks that damaged input gives exit 1 or 2 and one ``prog: error:`` line,
never a traceback, and that a failed command leaves existing output files alone. A failure
prints hypothesis' smallest failing example; ``--seed`` reproduces a run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    ROOT / "tests" / "cli" / name for name in ("test_robustness.py", "test_robustness_hwsim.py")
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples per property")
    parser.add_argument("--seed", type=int, help="hypothesis seed, to reproduce a run")
    parser.add_argument("-k", dest="select", help="only properties matching (pytest -k)")
    args = parser.parse_args(argv)
    if args.examples < 1:
        parser.error("--examples must be at least 1")
    os.environ["MEMCRYPT_FUZZ_EXAMPLES"] = str(args.examples)
    sys.path.insert(0, str(ROOT))
    import pytest

    pytest_args = [*map(str, TESTS), "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics"]
    if args.seed is not None:
        pytest_args.append(f"--hypothesis-seed={args.seed}")
    if args.select:
        pytest_args += ["-k", args.select]
    start = time.perf_counter()
    code = int(pytest.main(pytest_args))
    print(f"fuzz_cli: {args.examples} examples per property, {time.perf_counter() - start:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
