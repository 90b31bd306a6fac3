# -*- test-case-name: tests.test_cli_commands -*-
"""
C{rule list|get|create|update|delete|enable|disable|test}.

Like st2, update/enable/disable/delete first look the rule up by ref (so a
missing rule gives C{Rule "x" is not found.} and exit 2) and then address
it by id.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping

from bwcd.cli.commands.common import (
    Resource,
    addAttrOption,
    addBranch,
    addCommand,
    addListOptions,
    copyFilters,
    createResource,
    deleteResource,
    failureReported,
    fetchList,
    findResource,
    loadMetaFile,
    printPage,
    printDocument,
    printProperties,
    setEnabled,
    showResource,
    structured,
    updateResource,
)
from bwcd.cli.errors import CLIError
from bwcd.cli.session import decodeJSON

LIST_ATTRIBUTES = ["ref", "pack", "description", "enabled"]
IFTT_ATTRIBUTES = ["ref", "trigger.ref", "action.ref", "enabled"]
RULES = Resource("/rules", "Rule", "rule", ("id", "uid", "ref", "pack", "name", "description", "enabled"))


async def ruleList(session, args) -> int:
    params = copyFilters({"limit": args.last}, args, ("pack", "action", "trigger"))
    if args.enabled:
        params["enabled"] = "true"
    elif args.disabled:
        params["enabled"] = "false"
    rules, total = await fetchList(session, "/rules/", "rules", params)
    attributes = IFTT_ATTRIBUTES if args.iftt and args.attr == LIST_ATTRIBUTES else args.attr
    printPage(session, args, rules, attributes, "rules", total)
    return 0


async def ruleGet(session, args) -> int:
    return await showResource(session, args, RULES, args.ref_or_id)


def _ruleFromFile(path: str) -> Dict[str, Any]:
    data = loadMetaFile(path)
    if not isinstance(data, dict):
        raise CLIError(f'File "{path}" must hold one rule (a mapping)')
    return data


async def ruleCreate(session, args) -> int:
    with failureReported(session):
        rule = await createResource(session, RULES, _ruleFromFile(args.file))
    printProperties(session, args, rule, ["all"], order=RULES.order)
    return 0


async def ruleUpdate(session, args) -> int:
    rule = await findResource(session, RULES, args.ref_or_id)
    data = _ruleFromFile(args.file)
    if not data.get("id"):
        data["id"] = rule["id"]
    elif data["id"] != rule["id"]:
        raise CLIError("The value for the rule id in the JSON/YAML file does not match the ID provided in the command line arguments.")
    return await updateResource(session, args, RULES, rule, data)


def _editable(rule: Dict[str, Any]) -> Dict[str, Any]:
    data = dict(rule)
    data.pop("ref", None)
    return data


async def ruleEnable(session, args) -> int:
    return await setEnabled(session, args, RULES, args.ref_or_id, True, _editable)


async def ruleDisable(session, args) -> int:
    return await setEnabled(session, args, RULES, args.ref_or_id, False, _editable)


async def ruleDelete(session, args) -> int:
    return await deleteResource(session, RULES, args.ref_or_id)


# -- explanations (rule test, trigger-instance explain) ----------------------

EXPLAIN_PATH = "/rules/explain"


def _shown(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def formatRuleExplanation(rule: Mapping[str, Any]) -> List[str]:
    """
    One rule's explanation as lines for a person.
    """
    if rule.get("fires"):
        verdict = "MATCHES and fires"
    elif rule.get("matched"):
        verdict = "MATCHES but does not fire"
    else:
        verdict = "DOES NOT MATCH"
    saved = "" if rule.get("saved") else " (not saved)"
    lines = [f'Rule {rule.get("ref")}{saved}: {verdict}', f'  {rule.get("reason")}']
    for criterion in rule.get("criteria") or []:
        mark = "holds" if criterion.get("matched") else "fails"
        pattern = _shown(criterion.get("pattern"))
        if criterion.get("pattern_source") != criterion.get("pattern"):
            pattern += f' (from {_shown(criterion.get("pattern_source"))})'
        lines.append(
            f'  [{mark}] {criterion.get("key")}: value {_shown(criterion.get("value"))} {criterion.get("operator")} {pattern}'
        )
        if criterion.get("error"):
            lines.append(f'         error: {criterion["error"]}')
    if rule.get("parameters_error"):
        lines.append(f'  action {rule.get("action")}: parameters cannot be rendered: {rule["parameters_error"]}')
    else:
        lines.append(f'  action {rule.get("action")} with parameters:')
        for name, value in (rule.get("parameters") or {}).items():
            lines.append(f"    {name}: {_shown(value, 1000)}")
    return lines


def formatExplanation(doc: Mapping[str, Any]) -> str:
    """
    C{POST /v1/rules/explain}'s answer as text for a person.
    """
    lines: List[str] = []
    if doc.get("trigger_instance"):
        lines.append(f'Trigger instance {doc["trigger_instance"]} of trigger {doc.get("trigger")}')
    elif doc.get("trigger"):
        lines.append(f'Payload for trigger {doc["trigger"]}')
    lines.append(f'payload: {_shown(doc.get("payload"), 1000)}')
    if doc.get("payload_error"):
        lines.append(f'Note: {doc["payload_error"]}')
    rules = doc.get("rules") or []
    if not rules:
        lines.append("No rule is defined for this trigger.")
    for rule in rules:
        lines.append("")
        lines.extend(formatRuleExplanation(rule))
    return "\n".join(lines)


async def explain(session, body: Mapping[str, Any]) -> Dict[str, Any]:
    """
    Ask the API to explain; an error answer prints C{ERROR: ...} and exits
    2, so that 1 keeps meaning "does not match".
    """
    with failureReported(session):
        response = await session.api("POST", EXPLAIN_PATH, data=body, allow=(400, 404))
        if response.code in (400, 404):
            # the instance or rule named does not exist, or the rule file is
            # not a valid rule: the server's one-line reason
            raise CLIError(response.faultstring() or f"{response.code} {response.phrase}")
        doc = decodeJSON(response)
        if not isinstance(doc, dict):
            raise CLIError(f"Unexpected answer for POST {EXPLAIN_PATH}: expected a JSON object")
    return doc


def _triggerInstanceFromFile(path: str) -> Dict[str, Any]:
    data = loadMetaFile(path)
    if not isinstance(data, dict):
        raise CLIError(f'File "{path}" must hold one trigger instance (a mapping)')
    return data


async def ruleTest(session, args) -> int:
    """
    st2-rule-tester through the API: exit 0 when the rule matches the
    trigger instance, 1 when it does not.
    """
    with failureReported(session):
        body: Dict[str, Any] = {"rule": _ruleFromFile(args.rule) if args.rule else args.rule_ref}
        if args.trigger_instance_id:
            body["trigger_instance"] = args.trigger_instance_id
        else:
            instance = _triggerInstanceFromFile(args.trigger_instance_file)
            if instance.get("trigger") is not None:
                body["trigger"] = instance["trigger"]
            body["payload"] = instance.get("payload")
    doc = await explain(session, body)
    rules = doc.get("rules") or []
    matched = bool(rules) and bool(rules[0].get("matched"))
    if structured(args):
        printDocument(session, args, doc, None, lambda: "")
    else:
        session.write(formatExplanation(doc))
        session.write("=== RULE MATCHES ===" if matched else "=== RULE DOES NOT MATCH ===")
    return 0 if matched else 1


def _refArgument(parser) -> None:
    parser.add_argument("ref_or_id", metavar="ref-or-id", help="Reference or ID of the rule.")


def register(subparsers) -> None:
    branch = addBranch(subparsers, "rule", "Rules")

    parser = addCommand(branch, "list", "Get the list of the 50 most recent rules.", ruleList)
    addListOptions(parser, LIST_ATTRIBUTES, recent="rules")
    parser.add_argument("-p", "--pack", type=str, help="Only return resources belonging to the provided pack")
    parser.add_argument("-c", "--action", help="Action reference to filter the list.")
    parser.add_argument("-g", "--trigger", help="Trigger type reference to filter the list.")
    parser.add_argument("--iftt", action="store_true", help="Show trigger and action in display list.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--enabled", action="store_true", help="Only return enabled rules.")
    group.add_argument("--disabled", action="store_true", help="Only return disabled rules.")

    parser = addCommand(branch, "get", "Get individual rule.", ruleGet)
    _refArgument(parser)
    addAttrOption(parser)

    parser = addCommand(branch, "create", "Create a new rule.", ruleCreate)
    parser.add_argument("file", help="JSON/YAML file containing the rule to create.")

    parser = addCommand(branch, "update", "Updating an existing rule.", ruleUpdate)
    _refArgument(parser)
    parser.add_argument("file", help="JSON/YAML file containing the rule to update.")

    parser = addCommand(
        branch, "test", "Test whether a rule matches a trigger instance (st2-rule-tester); exits 0 if it does, 1 if not.", ruleTest
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--rule", help="Path to the file containing the rule definition (need not be saved).")
    group.add_argument("--rule-ref", dest="rule_ref", help="Reference or ID of a saved rule.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--trigger-instance-file", dest="trigger_instance_file", help="Path to a JSON/YAML file with the trigger instance (trigger and payload).")
    group.add_argument("--trigger-instance-id", dest="trigger_instance_id", help="ID of a stored trigger instance.")

    for name, help, handler in (
        ("delete", "Delete an existing rule.", ruleDelete),
        ("enable", "Enable an existing rule.", ruleEnable),
        ("disable", "Disable an existing rule.", ruleDisable),
    ):
        _refArgument(addCommand(branch, name, help, handler))
