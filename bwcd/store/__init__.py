"""bwcd.store."""
