"""Building a signed SDK enclave image for an in-process benchmark."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sgxtool import sdkinfo
from sgxtool.build import Target, sign_enclave
from sgxtool.config import parse_config
from sgxtool.keys import generate_key
from sgxtool.sign import KeySigner


def signed_image(tmp: Path, name: str, source: str, config: str) -> Path:
    """C ``source`` built with the SDK and signed (fresh key, fixed date) under ``config``."""
    (tmp / f"{name}.c").write_text(source)
    elf = tmp / f"{name}.elf"
    cmd = ["cc", *sdkinfo.cflags(), "-O2", str(tmp / f"{name}.c"), *sdkinfo.ldflags(), "-o",
           str(elf)]  # fmt: skip
    subprocess.run(cmd, check=True)
    image = tmp / f"{name}.img"
    sign_enclave(Target(parse_config(config), elf), KeySigner(generate_key()), 0x20250101,
                 out=image)  # fmt: skip
    return image
