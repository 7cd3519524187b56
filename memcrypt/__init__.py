"""memcrypt: plumbing shared by the three programs and their packages.

Tool-neutral and public: the error root (:mod:`memcrypt.errors`), bounded reads and atomic
writes (:mod:`memcrypt.files`), the command-line helpers (:mod:`memcrypt.cli`) and the signer
interface both tools sign through (:mod:`memcrypt.signer`). It sits
below every layer: the simulator (``hwsim``) and both tools (``sgxtool``, ``sevtool``) import
it, and it imports none of them.
"""

from __future__ import annotations

__all__: list[str] = []
