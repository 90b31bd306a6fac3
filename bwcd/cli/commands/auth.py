# -*- test-case-name: tests.test_cli_commands -*-
"""
C{login} and C{auth}: getting a token from the auth service.

C{login} also remembers the user in the config file and caches the token,
so later commands authenticate without a password, as C{st2 login} does.
"""

from __future__ import annotations

import getpass

from bwcd.cli.commands.common import addCommand, printProperties
from bwcd.cli.config import saveLoginCredentials
from bwcd.cli.errors import CLIError


def _password(args) -> str:
    if args.password is not None:
        return args.password
    try:
        return getpass.getpass()
    except (EOFError, KeyboardInterrupt):
        raise CLIError("No password given (use -p/--password)")


async def login(session, args) -> int:
    password = _password(args)
    doc = await session.createToken(args.username, password, args.ttl)
    session.cacheToken(doc)
    try:
        saveLoginCredentials(session.settings.configPath, args.username, password if args.write_password else None)
    except OSError as e:
        raise CLIError(f'Failed to log in as {args.username}: cannot write the config file "{session.settings.configPath}": {e.strerror}')
    session.write(f"Logged in as {args.username}")
    if not args.write_password:
        session.write("")
        session.write(
            "Note: You didn't use --write-password option so the password hasn't been stored in the client config "
            "and you will need to login again in 24 hours when the auth token expires."
        )
        session.write(
            f'As an alternative, you can run {session.prog} login command with the "--write-password" flag, but keep it mind '
            f"this will cause it to store the password in plain-text in the client config file ({session.settings.configPath})."
        )
    return 0


async def auth(session, args) -> int:
    password = _password(args)
    doc = await session.createToken(args.username, password, args.ttl)
    if args.only_token:
        session.write(str(doc["token"]))
    else:
        printProperties(session, args, doc, ["user", "token", "expiry"], order=("user", "token", "expiry"))
    return 0


def _credentialArguments(parser) -> None:
    parser.add_argument("username", help="Name of the user to authenticate.")
    parser.add_argument("-p", "--password", dest="password", help="Password for the user. If password is not provided, it will be prompted for.")
    parser.add_argument(
        "-l", "--ttl", type=int, dest="ttl", default=None, help="The life span of the token in seconds. Max TTL configured by the admin supersedes this."
    )


def register(subparsers) -> None:
    parser = addCommand(
        subparsers,
        "login",
        "Authenticate user, acquire access token, and update CLI config directory",
        login,
        auth=False,
        output=False,
    )
    _credentialArguments(parser)
    parser.add_argument(
        "-w",
        "--write-password",
        action="store_true",
        default=False,
        dest="write_password",
        help="Write the password in plain text to the config file (default is to omit it)",
    )

    parser = addCommand(subparsers, "auth", "Authenticate user and acquire access token.", auth, auth=False)
    _credentialArguments(parser)
    parser.add_argument(
        "-t", "--only-token", action="store_true", dest="only_token", default=False, help="On successful authentication, print only token to the console."
    )
