# -*- test-case-name: tests.test_cli_commands -*-
"""
C{webhook list|get}: the webhooks that rules have registered, and
C{webhook policy list|get|set FILE|delete URL}: their policies.

A webhook is a C{core.st2.webhook} trigger; its url is the trigger's
C{parameters.url}, shown as stored and sorted, as st2 does.  C{webhook list}
adds a C{verification} column: the preset of the hook's policy, or
C{credentials} when senders need an API key or token.
"""

from __future__ import annotations

from urllib.parse import quote

from bwcd.cli.commands.common import (
    Resource,
    addAttrOption,
    addBranch,
    addCommand,
    addListOptions,
    fetchList,
    findResource,
    loadMetaFile,
    notFound,
    printProperties,
    printTable,
    requireDict,
)

LIST_ATTRIBUTES = ["url", "type", "verification", "description"]
POLICY_ATTRIBUTES = ["url", "verify.preset", "dedup", "limits", "pack"]
WEBHOOKS = Resource("/webhooks", "Webhook", "webhook", ("type", "description"))


def withURL(trigger: dict) -> dict:
    shown = dict(trigger)
    parameters = trigger.get("parameters")
    shown["url"] = parameters.get("url", "") if isinstance(parameters, dict) else ""
    shown.setdefault("verification", "credentials")
    return shown


def policyPath(url: str) -> str:
    return "/webhookpolicies/" + quote(url.strip("/"), safe="/")


async def policyList(session, args) -> int:
    policies, _ = await fetchList(session, "/webhookpolicies", "webhook policies")
    printTable(session, args, [p for p in policies if isinstance(p, dict)], args.attr)
    return 0


async def policyGet(session, args) -> int:
    doc = await session.getOrNone(policyPath(args.url))
    if doc is None:
        raise notFound(session, "Webhook policy", args.url)
    printProperties(session, args, requireDict(doc, "webhook policy"), args.attr)
    return 0


async def policySet(session, args) -> int:
    data = requireDict(loadMetaFile(args.file), f"the policy in {args.file}")
    url = args.url or data.get("url")
    if not isinstance(url, str) or not url.strip("/"):
        from bwcd.cli.errors import CLIError

        raise CLIError(f'The policy in {args.file} names no url (give "url:" or --url).')
    doc = await session.sendJSON("PUT", policyPath(url), data)
    printProperties(session, args, requireDict(doc, "webhook policy"), ["all"])
    return 0


async def policyDelete(session, args) -> int:
    response = await session.api("DELETE", policyPath(args.url), allow=(404,))
    if response.code == 404:
        raise notFound(session, "Webhook policy", args.url)
    session.write(f'Webhook policy "{args.url}" has been successfully deleted.')
    return 0


async def webhookList(session, args) -> int:
    triggers, _ = await fetchList(session, "/webhooks", "webhooks")
    hooks = sorted((withURL(t) for t in triggers if isinstance(t, dict)), key=lambda t: str(t["url"]))
    printTable(session, args, hooks, args.attr)
    return 0


async def webhookGet(session, args) -> int:
    hook = withURL(await findResource(session, WEBHOOKS, args.url))
    printProperties(session, args, hook, args.attr, order=WEBHOOKS.order)
    return 0


def register(subparsers) -> None:
    branch = addBranch(subparsers, "webhook", "Webhooks")
    parser = addCommand(branch, "list", "Get the list of webhooks.", webhookList)
    addListOptions(parser, LIST_ATTRIBUTES)
    parser = addCommand(branch, "get", "Get individual webhook.", webhookGet)
    parser.add_argument("url", help="Url of the webhook.")
    addAttrOption(parser)
    policies = addBranch(branch, "policy", "Webhook policies: signature checks, deduplication and limits per hook")
    parser = addCommand(policies, "list", "Get the list of webhook policies.", policyList)
    addListOptions(parser, POLICY_ATTRIBUTES)
    parser = addCommand(policies, "get", "Get the policy of a webhook.", policyGet)
    parser.add_argument("url", help="Url of the webhook.")
    addAttrOption(parser)
    parser = addCommand(policies, "set", "Set a webhook's policy from a YAML or JSON file.", policySet)
    parser.add_argument("file", help="Policy file (.yaml, .yml or .json).")
    parser.add_argument("--url", help="Url of the webhook (default: the file's url).")
    parser = addCommand(policies, "delete", "Delete the policy of a webhook.", policyDelete)
    parser.add_argument("url", help="Url of the webhook.")
