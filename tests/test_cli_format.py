"""
Tests for L{bwcd.cli.format}: st2's tables, execution view, timestamps and
-j/-y documents.
"""

from __future__ import annotations

import json

import yaml
from twisted.trial.unittest import SynchronousTestCase

from bwcd.cli import format as fmt

EXECUTION = {
    "id": "5e8f3c2a1b2c3d4e5f6a7b8c",
    "action": {"ref": "core.local", "runner_type": "local-shell-cmd"},
    "context": {"user": "admin"},
    "parameters": {"cmd": "echo hi"},
    "status": "succeeded",
    "start_timestamp": "2017-03-31T08:21:19.123456Z",
    "end_timestamp": "2017-03-31T08:21:21.000001Z",
    "result": {"failed": False, "succeeded": True, "return_code": 0, "stdout": "hi", "stderr": ""},
}


class ValueTests(SynchronousTestCase):
    def test_getValue(self) -> None:
        """
        Dotted names reach into nested dicts; missing steps give None.
        """
        self.assertEqual(fmt.getValue(EXECUTION, "action.ref"), "core.local")
        self.assertIsNone(fmt.getValue(EXECUTION, "action.nope.x"))
        self.assertIsNone(fmt.getValue(EXECUTION, "status.x"))

    def test_selectAttributes(self) -> None:
        """
        Selection keeps dotted nesting, skips absent names, and 'all' keeps everything.
        """
        self.assertEqual(fmt.selectAttributes(EXECUTION, ["id", "action.ref", "absent"]), {"id": EXECUTION["id"], "action": {"ref": "core.local"}})
        self.assertEqual(fmt.selectAttributes(EXECUTION, ["all"]), EXECUTION)
        self.assertEqual(fmt.selectAttributes({"a": None}, ["a"]), {"a": None})

    def test_json(self) -> None:
        """
        -j prints sorted 4-space JSON of the selected attributes (lists item by item).
        """
        text = fmt.formatJSON([EXECUTION], ["id", "status"])
        self.assertEqual(json.loads(text), [{"id": EXECUTION["id"], "status": "succeeded"}])
        self.assertIn('\n        "id": ', text)
        self.assertLess(text.index('"id"'), text.index('"status"'))

    def test_yaml(self) -> None:
        """
        -y prints the same selection as block YAML.
        """
        text = fmt.formatYAML(EXECUTION, ["id", "action.ref"])
        self.assertEqual(yaml.safe_load(text), {"id": EXECUTION["id"], "action": {"ref": "core.local"}})
        self.assertNotIn("{", text)

    def test_cellText(self) -> None:
        """
        Cells: None empty, string lists joined, containers as JSON, booleans as Python shows them.
        """
        self.assertEqual(fmt.cellText(None), "")
        self.assertEqual(fmt.cellText(["a", "b"]), "a, b")
        self.assertEqual(fmt.cellText([1, 2]), "[1, 2]")
        self.assertEqual(fmt.cellText({}), "")
        self.assertEqual(fmt.cellText({"a": 1}), '{"a": 1}')
        self.assertEqual(fmt.cellText(True), "True")


class TimestampTests(SynchronousTestCase):
    def test_st2Format(self) -> None:
        """
        ISO timestamps are shown as 'Fri, 31 Mar 2017 08:21:19 UTC'.
        """
        self.assertEqual(fmt.formatTimestamp("2017-03-31T08:21:19.123456Z"), "Fri, 31 Mar 2017 08:21:19 UTC")
        self.assertEqual(fmt.formatTimestamp("2017-03-31T08:21:19Z"), "Fri, 31 Mar 2017 08:21:19 UTC")
        self.assertEqual(fmt.formatTimestamp("2017-03-31T10:21:19+02:00"), "Fri, 31 Mar 2017 08:21:19 UTC")

    def test_timezone(self) -> None:
        """
        The [cli] timezone converts the time and names the zone.
        """
        self.assertEqual(fmt.formatTimestamp("2017-03-31T08:21:19Z", "Europe/Paris"), "Fri, 31 Mar 2017 10:21:19 CEST")

    def test_emptyAndOther(self) -> None:
        """
        No value gives nothing; non-timestamps are left alone.
        """
        self.assertEqual(fmt.formatTimestamp(None), "")
        self.assertEqual(fmt.formatTimestamp(""), "")
        self.assertEqual(fmt.formatTimestamp("soon"), "soon")

    def test_elapsedCompleted(self) -> None:
        """
        Completed: end minus start in whole seconds (both truncated).
        """
        self.assertEqual(fmt.statusWithElapsed(EXECUTION, now=0), "succeeded (2s elapsed)")

    def test_elapsedRunning(self) -> None:
        """
        Running: now minus start.
        """
        running = dict(EXECUTION, status="running")
        del running["end_timestamp"]
        start = 1490948479
        self.assertEqual(fmt.statusWithElapsed(running, now=start + 7.9), "running (7s elapsed)")

    def test_elapsedOther(self) -> None:
        """
        Requested or without timestamps: the bare status.
        """
        self.assertEqual(fmt.statusWithElapsed({"status": "requested", "start_timestamp": "2017-03-31T08:21:19Z"}, now=0), "requested")
        self.assertEqual(fmt.statusWithElapsed({"status": "failed"}, now=0), "failed")

    def test_colorStatus(self) -> None:
        """
        Only the status word is coloured, and only when enabled.
        """
        self.assertEqual(fmt.colorStatus("failed (1s elapsed)", False), "failed (1s elapsed)")
        self.assertEqual(fmt.colorStatus("failed (1s elapsed)", True), "\033[91mfailed\033[0m (1s elapsed)")
        self.assertEqual(fmt.colorStatus("running", True), "\033[93mrunning\033[0m")


class ExecutionResultTests(SynchronousTestCase):
    def test_runView(self) -> None:
        """
        The run view: one attr per line, dicts as YAML under the attribute.
        """
        shown = dict(EXECUTION, status=fmt.statusWithElapsed(EXECUTION, 0))
        text = fmt.formatExecutionResult(
            shown,
            ["id", "action.ref", "context.user", "parameters", "status", "start_timestamp", "end_timestamp", "result"],
            {"start_timestamp": fmt.formatTimestamp, "end_timestamp": fmt.formatTimestamp},
        )
        self.assertEqual(
            text,
            "id: 5e8f3c2a1b2c3d4e5f6a7b8c\n"
            "action.ref: core.local\n"
            "context.user: admin\n"
            "parameters: \n"
            "  cmd: echo hi\n"
            "status: succeeded (2s elapsed)\n"
            "start_timestamp: Fri, 31 Mar 2017 08:21:19 UTC\n"
            "end_timestamp: Fri, 31 Mar 2017 08:21:21 UTC\n"
            "result: \n"
            "  failed: false\n"
            "  return_code: 0\n"
            "  stderr: ''\n"
            "  stdout: hi\n"
            "  succeeded: true",
        )

    def test_listValue(self) -> None:
        """
        A list follows the attribute on the same line, as st2 prints it.
        """
        self.assertEqual(fmt.formatExecutionResult({"log": [{"status": "requested"}]}, ["log"]), "log: - status: requested")

    def test_stringLookingLikeJSON(self) -> None:
        """
        A string holding a JSON object is shown as YAML.
        """
        self.assertEqual(fmt.formatExecutionResult({"result": '{"a": 1}'}, ["result"]), "result: \n  a: 1")

    def test_missingIsBlank(self) -> None:
        """
        An absent attribute prints with an empty value.
        """
        self.assertEqual(fmt.formatExecutionResult({}, ["result"]), "result: ")


class TableTests(SynchronousTestCase):
    def test_prettyTableLayout(self) -> None:
        """
        Borders, header, left aligned cells with one space of padding.
        """
        text = fmt.formatTable([{"ref": "a.b", "enabled": True}, {"ref": "c.d", "enabled": False}], ["ref", "enabled"])
        self.assertEqual(
            text,
            "+-----+---------+\n"
            "| ref | enabled |\n"
            "+-----+---------+\n"
            "| a.b | True    |\n"
            "| c.d | False   |\n"
            "+-----+---------+",
        )

    def test_emptyTable(self) -> None:
        """
        No rows: just the header box.
        """
        self.assertEqual(fmt.formatTable([], ["url", "type"]), "+-----+------+\n| url | type |\n+-----+------+")

    def test_fitsTerminal(self) -> None:
        """
        Long values wrap so every line fits the terminal width; the id column is never wrapped.
        """
        rows = [{"id": "5e8f3c2a1b2c3d4e5f6a7b8c", "description": "word " * 40, "pack": "examples"}]
        for width in (60, 80, 120):
            text = fmt.formatTable(rows, ["id", "pack", "description"], termWidth=width)
            self.assertTrue(all(len(line) <= width for line in text.splitlines()), (width, text))
            self.assertIn("| 5e8f3c2a1b2c3d4e5f6a7b8c |", text)
            flattened = " ".join(line.split("|")[3].strip() for line in text.splitlines()[3:-1])
            self.assertEqual(flattened.split(), ["word"] * 40)

    def test_narrowColumnsStayWhole(self) -> None:
        """
        Shrinking takes width from the widest column first.
        """
        self.assertEqual(fmt.allocateWidths([4, 50, 10], 40), [4, 26, 10])
        self.assertEqual(fmt.allocateWidths([4, 50, 10], 100), [4, 50, 10])
        self.assertEqual(fmt.allocateWidths([30, 50], 20, fixed=[0]), [30, 5])

    def test_explicitWidths(self) -> None:
        """
        -w sets column widths (one value applies to all columns).
        """
        text = fmt.formatTable([{"a": "xxxxxxxx", "b": "y"}], ["a", "b"], widths=[4])
        self.assertIn("| xxxx | y    |", text)

    def test_dottedColumnsAndTransforms(self) -> None:
        """
        Columns may name nested values and be transformed.
        """
        text = fmt.formatTable([EXECUTION], ["action.ref", "start_timestamp"], termWidth=200, transforms={"start_timestamp": fmt.formatTimestamp})
        self.assertIn("| core.local | Fri, 31 Mar 2017 08:21:19 UTC |", text)

    def test_colouredCellAlignment(self) -> None:
        """
        Colour codes do not count toward the column width.
        """
        text = fmt.formatTable([{"status": "\033[92mok\033[0m"}, {"status": "longer"}], ["status"])
        self.assertIn("| \033[92mok\033[0m     |", text)

    def test_propertyTable(self) -> None:
        """
        Property/Value: ordered names first, dicts as indented JSON, empty values blank.
        """
        text = fmt.formatPropertyTable({"name": "r", "id": "1", "criteria": {}, "action": {"ref": "core.local"}, "enabled": True}, ["all"], ("id", "name"))
        self.assertEqual(
            text.splitlines(),
            [
                "+----------+-------------------------+",
                "| Property | Value                   |",
                "+----------+-------------------------+",
                "| id       | 1                       |",
                "| name     | r                       |",
                "| action   | {                       |",
                '|          |     "ref": "core.local" |',
                "|          | }                       |",
                "| criteria |                         |",
                "| enabled  | True                    |",
                "+----------+-------------------------+",
            ],
        )

    def test_propertyTableWraps(self) -> None:
        """
        Long values wrap at 60 characters.
        """
        text = fmt.formatPropertyTable({"description": "x " * 100}, ["description"], termWidth=200)
        self.assertTrue(all(len(line) <= 20 + 60 + 7 for line in text.splitlines()))
        self.assertGreater(len(text.splitlines()), 5)

    def test_noteBox(self) -> None:
        """
        The more-results note is a one-cell box.
        """
        box = fmt.noteBox("rules", 50)
        self.assertEqual(box.splitlines()[1], "| Note: Only first 50 rules are displayed. Use -n/--last flag for more results. |")
        self.assertIn("Only one rule is displayed", fmt.noteBox("rules", 1))
