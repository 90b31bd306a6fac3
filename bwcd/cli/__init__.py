"""bwcd.cli."""
