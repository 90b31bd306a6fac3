"""bwcd.rules."""
