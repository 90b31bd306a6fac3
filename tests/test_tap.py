"""
Tests for the twistd plugin: it is listed, and makeService only builds.
"""

import os
import subprocess
import sys

from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from bwcd.service import BwcdService
from bwcd.tap import Options
from tests.daemon import childEnv


class PluginTests(SynchronousTestCase):
    def test_twistdListsBwcd(self):
        """
        twistd finds the plugin and lists it in its help.
        """
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        proc = subprocess.run([twistd, "--help"], env=childEnv(), capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 0)
        self.assertRegex(proc.stdout, r"\n\s+bwcd\s+StackStorm-compatible")

    def test_makeServiceDoesNoIO(self):
        """
        Building the service tree binds nothing and opens no store: that
        waits for startService.
        """
        state = os.path.abspath(self.mktemp())
        options = Options()
        old = os.environ.get("BWCD_STATE_DIR")
        os.environ["BWCD_STATE_DIR"] = state
        try:
            options.parseOptions([])
        finally:
            if old is None:
                del os.environ["BWCD_STATE_DIR"]
            else:
                os.environ["BWCD_STATE_DIR"] = old
        reactor = MemoryReactorClock()
        service = BwcdService(options["loaded"], reactor)
        self.assertIsInstance(service, MultiService)
        self.assertEqual(reactor.tcpServers, [])
        self.assertFalse(os.path.exists(state))
        self.assertEqual(len(list(service)), 2)  # the API and auth listeners
