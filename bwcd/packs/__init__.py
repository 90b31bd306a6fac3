"""bwcd.packs."""
