# -*- test-case-name: tests.test_cli_commands -*-
"""
C{webhook list|get}: the webhooks that rules have registered.

A webhook is a C{core.st2.webhook} trigger; its url is the trigger's
C{parameters.url}, shown as stored and sorted, as st2 does.
"""

from __future__ import annotations

from bwcd.cli.commands.common import Resource, addAttrOption, addBranch, addCommand, addListOptions, fetchList, findResource, printProperties, printTable

LIST_ATTRIBUTES = ["url", "type", "description"]
WEBHOOKS = Resource("/webhooks", "Webhook", "webhook", ("type", "description"))


def withURL(trigger: dict) -> dict:
    shown = dict(trigger)
    parameters = trigger.get("parameters")
    shown["url"] = parameters.get("url", "") if isinstance(parameters, dict) else ""
    return shown


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
