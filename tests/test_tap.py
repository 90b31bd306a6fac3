"""
Tests for the twistd plugin: it is listed, and makeService only builds.
"""

import os
import subprocess
import sys

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from bwcd.service import BwcdService, OrderedServices
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
        self.assertEqual(
            [child.name for child in service],
            ["store", "datastore key", "registration", "rule index", "webhook policies", "rules engine", "timers", "executor", "node watch", "token purge", "retention", "stream", "api listener", "auth listener", "stream listener", "readiness"],
        )


class Stage(Service):
    """
    A child that records its start and stop in a shared journal and fires
    its start or stop only when the test says so.
    """

    def __init__(self, name: str, journal: list) -> None:
        self.setName(name)
        self.journal = journal
        self.starting: Deferred = Deferred()
        self.stopping: Deferred = Deferred()

    def startService(self):
        super().startService()
        self.journal.append(("start", self.name))
        return self.starting

    def stopService(self):
        super().stopService()
        self.journal.append(("stop", self.name))
        return self.stopping


class OrderedServicesTests(SynchronousTestCase):
    def tree(self, *names: str):
        journal: list = []
        parent = OrderedServices()
        stages = [Stage(name, journal) for name in names]
        for stage in stages:
            stage.setServiceParent(parent)
        return parent, stages, journal

    def test_childrenStartOneAfterAnother(self):
        """
        Each child starts only once the one before it has finished
        starting; the parent's start fires after the last.
        """
        parent, (a, b), journal = self.tree("a", "b")
        started = parent.startService()
        self.assertEqual(journal, [("start", "a")])
        a.starting.callback(None)
        self.assertEqual(journal, [("start", "a"), ("start", "b")])
        self.assertNoResult(started)
        b.starting.callback(None)
        self.successResultOf(started)

    def test_childrenStopInReverseEachAwaited(self):
        """
        Children stop last-started first, each once the one after it has
        stopped; the parent's stop fires after the first child's.
        """
        parent, (a, b), journal = self.tree("a", "b")
        a.starting.callback(None)
        b.starting.callback(None)
        self.successResultOf(parent.startService())
        del journal[:]
        stopped = parent.stopService()
        self.assertEqual(journal, [("stop", "b")])
        b.stopping.callback(None)
        self.assertEqual(journal, [("stop", "b"), ("stop", "a")])
        self.assertNoResult(stopped)
        a.stopping.callback(None)
        self.successResultOf(stopped)

    def test_failedStartStopsTheSequence(self):
        """
        A child whose start fails fails the parent's start; the children
        after it never start, and stopping stops only those that started.
        """
        parent, (a, b), journal = self.tree("a", "b")
        started = parent.startService()
        a.starting.errback(RuntimeError("no store"))
        self.failureResultOf(started, RuntimeError)
        self.assertFalse(b.running)
        a.stopping = succeed(None)
        self.successResultOf(parent.stopService())
        self.assertEqual(journal, [("start", "a"), ("stop", "a")])

    def test_stopDuringStartStartsNothingMore(self):
        """
        Stopping while a child is still starting stops it and starts none
        of the children after it.
        """
        parent, (a, b), journal = self.tree("a", "b")
        parent.startService()
        a.stopping = succeed(None)
        self.successResultOf(parent.stopService())
        a.starting.callback(None)
        self.assertEqual(journal, [("start", "a"), ("stop", "a")])
        self.assertFalse(b.running)
