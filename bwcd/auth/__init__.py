"""bwcd.auth."""
