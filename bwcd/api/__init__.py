"""bwcd.api."""
