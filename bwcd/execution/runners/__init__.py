"""bwcd.execution.runners."""
