"""Intel SGX in the simulator: formats (``arch``), EPC/EPCM, ENCLS/ENCLU, launch control."""
