"""
Tests for L{bwcd.cli.main}: the parser, -h everywhere, fast start and the
mapping of failures to messages and exit codes.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.cli.errors import CLIError, OperationFailed
from bwcd.cli.main import buildParser, main, programName, runCommand

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subparserActions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield action


def allParsers(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in subparserActions(parser):
        for name, child in action.choices.items():
            yield from allParsers(child, path + (name,))


class ParserTests(SynchronousTestCase):
    def test_programName(self) -> None:
        """
        The program calls itself bwc or st2 after its executable, bwc otherwise.
        """
        self.assertEqual(programName("/usr/bin/st2"), "st2")
        self.assertEqual(programName("/opt/venv/bin/bwc"), "bwc")
        self.assertEqual(programName("/x/bwcd/cli/main.py"), "bwc")
        self.assertEqual(programName(None), "bwc")

    def test_commands(self) -> None:
        """
        Every command the issue lists exists.
        """
        names = {" ".join(path) for path, _ in allParsers(buildParser())}
        expected = {
            "login",
            "auth",
            "run",
            "action list",
            "action get",
            "action execute",
            "webhook list",
            "webhook get",
            "execution list",
            "execution get",
            "execution cancel",
            "execution re-run",
            "execution tail",
            "rule list",
            "rule get",
            "rule create",
            "rule update",
            "rule delete",
            "rule enable",
            "rule disable",
            "trigger-instance list",
            "trigger-instance get",
            "trigger-instance re-emit",
            "apikey create",
            "apikey list",
            "apikey get",
            "apikey enable",
            "apikey disable",
            "apikey delete",
        }
        self.assertEqual(expected - names, set())

    def test_helpEverywhere(self) -> None:
        """
        Every command and group has -h, and -j/-y where it prints resources.
        """
        for path, parser in allParsers(buildParser()):
            options = {s for a in parser._actions for s in a.option_strings}
            self.assertIn("-h", options, path)
            self.assertTrue(parser.format_help(), path)
            isGroup = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
            if (len(path) >= 2 and not isGroup) or path in (("run",), ("auth",)):
                self.assertTrue({"-j", "-y"} <= options, path)

    def test_runArguments(self) -> None:
        """
        run: the ref, the parameters (a quoted command is one word), options after them.
        """
        args = buildParser().parse_args(["run", "core.local", "echo hi", "-a", "--trace-tag", "t1", "-u", "bob"])
        self.assertEqual((args.ref_or_id, args.parameters, args.action_async, args.trace_tag, args.user), ("core.local", ["echo hi"], True, "t1", "bob"))
        args = buildParser().parse_args(["--debug", "run", "core.local", "--", "date", "-R"])
        self.assertEqual((args.debug, args.parameters), (True, ["date", "-R"]))

    def test_globalFlags(self) -> None:
        """
        Connection flags are global (before the command); token and key are per command.
        """
        args = buildParser().parse_args(["--url", "http://b", "--api-url", "http://a/v1", "--auth-url", "http://t", "--cacert", "c.pem", "rule", "list", "-t", "tok", "--api-key", "k"])
        self.assertEqual((args.base_url, args.api_url, args.auth_url, args.cacert, args.token, args.api_key), ("http://b", "http://a/v1", "http://t", "c.pem", "tok", "k"))

    def test_noCommand(self) -> None:
        """
        No command prints the help and exits 2; a group without sub-command is a usage error.
        """
        stdout = sys.stdout
        sys.stdout = io.StringIO()
        try:
            self.assertEqual(main([]), 2)
            self.assertIn("usage: ", sys.stdout.getvalue())
        finally:
            sys.stdout = stdout
        stderr = sys.stderr
        sys.stderr = io.StringIO()
        try:
            e = self.assertRaises(SystemExit, main, ["rule"])
            self.assertEqual(e.code, 2)
        finally:
            sys.stderr = stderr

    def test_fastStart(self) -> None:
        """
        Building the parser (what -h needs) imports neither Twisted, treq nor YAML.
        """
        code = "import sys; from bwcd.cli.main import buildParser; buildParser(); print(sorted(m for m in ('twisted', 'treq', 'yaml') if m in sys.modules))"
        output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), check=True)
        self.assertEqual(output.stdout.strip(), "[]")

    def test_printConfig(self) -> None:
        """
        --print-config shows the effective config file options.
        """
        home = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(home, ".st2"))
        with open(os.path.join(home, ".st2", "config"), "w") as f:
            f.write("[api]\nurl = http://x/v1\n")
        result = subprocess.run(
            [sys.executable, "-m", "bwcd.cli.main", "--print-config"], capture_output=True, text=True, cwd=REPO, env={"HOME": home, "PYTHONPATH": REPO, "PATH": os.environ["PATH"]}
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("[api]\nurl = http://x/v1\n", result.stdout)
        self.assertIn("cache_token = True", result.stdout)


class RunCommandTests(TestCase):
    def setUp(self) -> None:
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(self.home)
        self.out, self.err = io.StringIO(), io.StringIO()

    async def run_(self, handler, needsAuth=False, environ=None, **flags) -> int:
        args = argparse.Namespace(handler=handler, needsAuth=needsAuth, **flags)
        return await runCommand(reactor, args, self.out, self.err, environ or {"HOME": self.home})

    async def test_success(self) -> None:
        """
        The handler's return value is the exit code (None is 0).
        """

        async def handler(session, args):
            session.write("done")

        self.assertEqual(await self.run_(handler), 0)
        self.assertEqual(self.out.getvalue(), "done\n")

        async def three(session, args):
            return 3

        self.assertEqual(await self.run_(three), 3)

    async def test_cliError(self) -> None:
        """
        An expected failure prints one ERROR line and exits with its code.
        """

        async def handler(session, args):
            raise CLIError("Something clear")

        self.assertEqual(await self.run_(handler), 1)
        self.assertEqual(self.out.getvalue(), "ERROR: Something clear\n")

    async def test_operationFailed(self) -> None:
        """
        st2's operation failure exits 2 without repeating what was printed.
        """

        async def handler(session, args):
            session.write('Rule "x" is not found.\n')
            raise OperationFailed("Resource x not found.")

        self.assertEqual(await self.run_(handler), 2)
        self.assertEqual(self.out.getvalue(), 'Rule "x" is not found.\n\n')

    async def test_unexpectedNoTraceback(self) -> None:
        """
        A bug prints ERROR and exits 1; the traceback and settings only with --debug.
        """

        async def handler(session, args):
            raise KeyError("boom")

        self.assertEqual(await self.run_(handler), 1)
        self.assertEqual(self.out.getvalue(), "ERROR: KeyError: 'boom'\n")
        self.out = io.StringIO()
        self.assertEqual(await self.run_(handler, debug=True), 1)
        text = self.out.getvalue()
        self.assertIn("Traceback (most recent call last)", text)
        self.assertIn("ST2_API_URL: http://127.0.0.1:9101/v1", text)

    async def test_badConfig(self) -> None:
        """
        A missing explicit config file is reported before anything runs.
        """

        async def handler(session, args):
            raise AssertionError("not reached")

        code = await self.run_(handler, config_file=os.path.join(self.home, "nope"))
        self.assertEqual(code, 1)
        self.assertEqual(self.out.getvalue(), f'ERROR: Config "{os.path.join(self.home, "nope")}" not found\n')
