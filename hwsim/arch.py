"""x86 architectural constants that every part of the simulator shares.

Imports nothing: the DRAM model, the execution core and every device's ``arch`` module
take these from here (SDM vol. 3A 4.3: a 4-KByte page is the unit of paging, of the EPC
and of SEV's guest memory).
"""

from __future__ import annotations

__all__ = ["PAGE_SIZE"]

PAGE_SIZE = 4096
