"""
Helpers for tests.test_packaging: build the Debian package from a copy of the
work tree, install it, and run the daemon and nginx the way the shipped unit
and site say.
"""
