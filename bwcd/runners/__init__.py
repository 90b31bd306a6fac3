"""bwcd.runners."""
