"""Tests for bwcd (run with trial)."""
