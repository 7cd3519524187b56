"""AMD SEV in the simulator: formats (``arch``), certificates, the secure processor."""
