"""AMD SME in the simulator: boot configuration of host memory encryption."""
