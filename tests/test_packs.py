"""
Tests for pack loading: what a pack folder declares, and how a broken file
is reported and skipped.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from bwcd.packs.loader import CORE_PACK_DIR, findPacks, loadActions, packName


class LoaderTests(SynchronousTestCase):
    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "mypack", "actions"))
        self.write("mypack/pack.yaml", "ref: mypack\nname: My pack\n")

    def write(self, relative, text):
        path = os.path.join(self.root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def load(self):
        packs, problems = findPacks([self.root])
        pack = [p for p in packs if p.name == "mypack"][0]
        actions, actionProblems = loadActions(pack)
        return actions, [str(p) for p in problems + actionProblems]

    def test_corePack(self):
        """
        The built-in core pack is always found first and provides the four
        core actions.
        """
        packs, problems = findPacks([])
        self.assertEqual([p.name for p in packs], ["core"])
        actions, problems = loadActions(packs[0])
        self.assertEqual(problems, [])
        self.assertEqual(sorted(a["ref"] for a in actions), ["core.echo", "core.http", "core.local", "core.local_sudo", "core.noop"])
        self.assertEqual(packName(CORE_PACK_DIR)[0].name, "core")

    def test_validAction(self):
        """
        A valid script action becomes an Action document with st2's fields.
        """
        self.write("mypack/actions/go.sh", "#!/bin/sh\necho go\n")
        self.write("mypack/actions/go.yaml", "name: go\nrunner_type: local-shell-script\nentry_point: go.sh\nparameters:\n  n: {type: integer, position: 0}\n")
        actions, problems = self.load()
        self.assertEqual(problems, [])
        (action,) = actions
        self.assertEqual(
            {k: action[k] for k in ("ref", "uid", "name", "pack", "runner_type", "entry_point", "enabled", "metadata_file")},
            {"ref": "mypack.go", "uid": "action:mypack:go", "name": "go", "pack": "mypack", "runner_type": "local-shell-script",
             "entry_point": "go.sh", "enabled": True, "metadata_file": "actions/go.yaml"},
        )

    def test_problemsAreReportedAndSkipped(self):
        """
        Each invalid action file is reported with its path, field and reason,
        and the valid ones still load.
        """
        cases = {
            "noname.yaml": ("runner_type: local-shell-cmd\n", "name: is required and must be a string"),
            "runner.yaml": ("name: r\nrunner_type: python-script\n", "runner_type: unknown runner 'python-script' (known: http-request, local-shell-cmd, local-shell-script)"),
            "otherpack.yaml": ("name: o\npack: core\nrunner_type: local-shell-cmd\n", "pack: must be 'mypack' (the pack's name), got 'core'"),
            "escape.yaml": ("name: e\nrunner_type: local-shell-script\nentry_point: ../../../etc/passwd\n", "entry_point: must stay inside the pack's actions/ folder"),
            "missing.yaml": ("name: m\nrunner_type: local-shell-script\nentry_point: nope.sh\n", "entry_point: no such file"),
            "override.yaml": ("name: v\nrunner_type: local-shell-cmd\nparameters:\n  timeout: {type: string}\n", 'parameters.timeout: The attribute "type" for the runner parameter "timeout" in action "mypack.v" cannot be overridden.'),
            "yaml.yaml": ("name: [unclosed\n", "(file): cannot be read as YAML"),
            "badtype.yaml": ("name: t\nrunner_type: local-shell-cmd\nparameters:\n  x: {type: [string, integer]}\n", "parameters.x.type: must be one simple type"),
        }
        for name, (text, _) in cases.items():
            self.write(f"mypack/actions/{name}", text)
        self.write("mypack/actions/fine.yaml", "name: fine\nrunner_type: local-shell-cmd\n")
        actions, problems = self.load()
        self.assertEqual([a["ref"] for a in actions], ["mypack.fine"])
        self.assertEqual(len(problems), len(cases))
        for name, (_, reason) in cases.items():
            matching = [p for p in problems if p.startswith(os.path.join(self.root, "mypack", "actions", name) + ": ")]
            self.assertEqual(len(matching), 1, name)
            self.assertIn(reason, matching[0])

    def test_duplicatePackName(self):
        """
        A second folder declaring a pack name already found is skipped with a
        problem.
        """
        self.write("other/pack.yaml", "ref: mypack\n")
        packs, problems = findPacks([self.root])
        self.assertEqual([p.name for p in packs], ["core", "mypack"])
        self.assertEqual(len(problems), 1)
        self.assertIn("pack 'mypack' is already registered from another folder", str(problems[0]))
