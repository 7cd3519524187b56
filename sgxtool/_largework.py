"""The large-work policy (memcrypt.work) applied to sgxtool's inputs: what measuring or
loading a file will cost, from its layout, before doing it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from memcrypt.work import Progress, Work
    from sgxtool.config import EnclaveConfig

__all__ = ["enclave_work", "large_work"]


@contextmanager
def large_work(action: str, path: Path | None, cfg: EnclaveConfig | None) -> Iterator[Progress]:
    """Measuring ``path`` under memcrypt.work's policy: cost said, limit, progress."""
    from memcrypt.work import large_work as policy
    from sgxtool.image import one_layout_per_file

    with one_layout_per_file(), policy(enclave_work(action, path, cfg), prog="sgxtool") as progress:
        yield progress


def enclave_work(action: str, path: Path | None, cfg: EnclaveConfig | None) -> Work:
    """Pages to add and bytes to hash for ``path``, from its layout (not by doing it)."""
    from memcrypt.work import Work
    from sgxtool.image import ImageKind, detect, layout_of, read_image

    kind = None if path is None else detect(path)
    if path is None or kind is ImageKind.SGXS:  # an SGXS stream is hashed as it is
        return Work(f"{action} {path}", 0, 0 if path is None else path.stat().st_size)
    if kind is ImageKind.SIGNED_ELF and cfg is None:
        cfg = read_image(path).config
    if kind not in (ImageKind.ELF, ImageKind.SIGNED_ELF) or cfg is None:
        return Work(f"{action} {path}", 0, 0)
    from sgxtool.measure import layout_work

    return layout_work(f"{action} {path}", layout_of(path, cfg))
