# -*- test-case-name: tests.test_admin -*-
"""
C{bwcd-admin}: the first credentials of a fresh install.

bwcd ships with no default password.  An operator with access to the
configuration (and so to the users file and the database) creates a user for
password logins or an API key for webhooks here, without the daemon having to
be reachable or even running.

    bwcd-admin [--config PATH] user-add NAME [--password-stdin]
    bwcd-admin [--config PATH] apikey-create [--user NAME] [--metadata JSON]
                                             [--scope webhooks:GLOB ...]
    bwcd-admin [--config PATH] purge --before DATE [--collections KIND ...]

A key with C{--scope} may only send events to the hooks its globs match
(for senders such as Grafana or Alertmanager that cannot sign requests).

C{purge} deletes, once, what the daemon's C{retention} settings would delete
if their cutoff were C{DATE} (L{bwcd.retention}): completed executions with
their output, output rows of completed executions, processed trigger
instances and rule enforcements older than C{DATE}.  It takes the same lease
as the daemons' periodic purge, so it never runs alongside one.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import IO, Any, Mapping, Optional, Sequence

import attrs
import yaml
from twisted.internet import task
from twisted.internet.defer import ensureDeferred

from bwcd.auth.apikeys import ApiKeys
from bwcd.auth.htpasswd import UsersFileError, setPassword
from bwcd.auth.principal import BadScope, parseScopes
from bwcd.config import SYSTEM_CONFIG, Config, ConfigError, loadConfig, parseConfig
from bwcd.retention import KINDS, Purger
from bwcd.store.interface import StoreError
from bwcd.timeutil import isoformat, parseIso


def loadAdminConfig(path: Optional[str], environ: Mapping[str, str] = os.environ) -> Config:
    """
    The daemon's configuration, found the same way, except that a configured
    users file may be missing: creating it is what C{user-add} is for.
    """
    try:
        return loadConfig(path, environ)
    except ConfigError as e:
        if not str(e).startswith("auth.users_file: no such file"):
            raise
    source = path or environ.get("BWCD_CONFIG") or SYSTEM_CONFIG
    with open(source, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    auth = dict(data["auth"])
    usersFile = auth.pop("users_file")
    data["auth"] = auth
    config = parseConfig(data, source, environ)
    return attrs.evolve(config, auth=attrs.evolve(config.auth, users_file=usersFile))


def buildParser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="configuration file (default: $BWCD_CONFIG, else /etc/bwcd/bwcd.yaml if it exists)",
    )
    parser = argparse.ArgumentParser(
        prog="bwcd-admin",
        description="Create bwcd's first credentials: a password user or an API key.",
    )
    parser.add_argument("--config", metavar="PATH", default=None, help="configuration file (may also follow the command)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    userAdd = commands.add_parser(
        "user-add",
        parents=[common],
        help="add a user to the users file, or change their password",
    )
    userAdd.add_argument("name", metavar="NAME")
    userAdd.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input instead of prompting",
    )
    apikey = commands.add_parser(
        "apikey-create",
        parents=[common],
        help="create an API key and print it (it is shown only this once)",
    )
    apikey.add_argument("--user", metavar="NAME", default=None, help="owner of the key (default: system.user)")
    apikey.add_argument("--metadata", metavar="JSON", default=None, help='a JSON object stored with the key, e.g. \'{"for": "ci"}\'')
    apikey.add_argument(
        "--scope",
        metavar="webhooks:GLOB",
        action="append",
        default=None,
        dest="scopes",
        help="limit the key to sending events to the hooks matching GLOB (repeatable), e.g. webhooks:alerts/*",
    )
    purge = commands.add_parser(
        "purge",
        parents=[common],
        help="delete completed executions, their output, processed trigger instances and enforcements older than a date",
    )
    purge.add_argument("--before", metavar="DATE", required=True, type=parseDate, help="UTC date (2026-01-31) or timestamp (2026-01-31T12:00:00Z)")
    purge.add_argument(
        "--collections",
        metavar="KIND",
        nargs="+",
        choices=KINDS,
        default=list(KINDS),
        help=f"what to purge (default: all of {', '.join(KINDS)})",
    )
    purge.add_argument("--batch-size", metavar="N", type=int, default=500, help="documents deleted per store call (default 500)")
    return parser


def parseDate(text: str) -> str:
    """
    A C{--before} argument as the store's timestamp form.
    """
    value = text.strip()
    if len(value) == 10:
        value += "T00:00:00Z"
    try:
        return isoformat(parseIso(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UTC date or timestamp: {text!r}") from None


async def purge(reactor: Any, config: Config, before: str, kinds: Sequence[str], stdout: IO[str], batchSize: int = 500) -> Optional[dict]:
    """
    Open the configured store and purge C{kinds} older than C{before};
    print and return the counts, or C{None} when another process is purging.
    """
    from bwcd.store.url import openStore

    store = openStore(config.storage.url, reactor)
    await store.start()
    try:
        counts = await Purger(store, reactor, batchSize=batchSize, pause=0).run({kind: before for kind in kinds})
    finally:
        await store.stop()
    if counts is not None:
        for kind in sorted(counts):
            stdout.write(f"{kind}: {counts[kind]} deleted\n")
        stdout.flush()
    return counts


def readPassword(fromStdin: bool, stdin: IO[str], prompt: Optional[Any] = None) -> str:
    """
    @raise UsersFileError: the two prompted passwords differ or none came.
    """
    if fromStdin:
        line = stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        return password[:-1] if password.endswith("\r") else password
    prompt = prompt or getpass.getpass
    first = prompt("Password: ")
    second = prompt("Password (again): ")
    if first != second:
        raise UsersFileError("the passwords do not match")
    return first


def userAdd(config: Config, name: str, password: str, stdout: IO[str]) -> None:
    path = config.auth.users_file
    created = setPassword(path, name, password)
    verb = "Added user" if created else "Changed the password of user"
    stdout.write(f"{verb} {name} in {path}\n")


def giveToFolderOwner(path: str) -> None:
    """
    When root created the SQLite database (a fresh install) or left a
    journal behind, hand those files to the owner of their folder, the
    daemon's user, which could not write them otherwise.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    folder = os.stat(os.path.dirname(os.path.abspath(path)))
    if folder.st_uid == 0:
        return
    for name in (path, path + "-wal", path + "-shm", path + "-journal"):
        try:
            if os.stat(name).st_uid == 0:
                os.chown(name, folder.st_uid, folder.st_gid)
        except FileNotFoundError:
            pass


async def apikeyCreate(reactor: Any, config: Config, user: str, metadata: dict, stdout: IO[str], scopes: Sequence[str] = ()) -> None:
    """
    Open the configured store, create a key (limited to C{scopes}, if any)
    and print only the key.
    """
    from bwcd.store.url import openStore

    store = openStore(config.storage.url, reactor)
    sqlitePath = getattr(store, "path", None) if store.name == "sqlite" else None
    if sqlitePath is not None:
        os.makedirs(os.path.dirname(os.path.abspath(sqlitePath)), exist_ok=True)
    await store.start()
    try:
        _doc, key = await ApiKeys(store, reactor).create(user, metadata=metadata, scopes=list(scopes))
    finally:
        await store.stop()
    if sqlitePath is not None:
        giveToFolderOwner(sqlitePath)
    stdout.write(key + "\n")
    stdout.flush()


def main(argv: Optional[Sequence[str]] = None, stdin: Optional[IO[str]] = None, stdout: Optional[IO[str]] = None, stderr: Optional[IO[str]] = None) -> int:
    """
    The C{bwcd-admin} console entry point; returns the exit status.
    """
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = buildParser()
    args = parser.parse_args(argv)
    try:
        config = loadAdminConfig(args.config)
    except (ConfigError, OSError) as e:
        stderr.write(f"bwcd-admin: {e}\n")
        return 1
    if args.command == "user-add":
        try:
            password = readPassword(args.password_stdin, stdin)
            userAdd(config, args.name, password, stdout)
        except UsersFileError as e:
            stderr.write(f"bwcd-admin: {e}\n")
            return 1
        except (EOFError, KeyboardInterrupt):
            stderr.write("bwcd-admin: no password given\n")
            return 1
        return 0
    if args.command == "purge":
        return runPurge(config, args.before, args.collections, args.batch_size, stdout, stderr)
    metadata: dict = {}
    if args.metadata is not None:
        try:
            metadata = json.loads(args.metadata)
        except ValueError as e:
            parser.error(f"--metadata: not JSON: {e}")
        if not isinstance(metadata, dict):
            parser.error("--metadata: expected a JSON object")
    try:
        scopes = parseScopes(args.scopes)
    except BadScope as e:
        parser.error(f"--scope: {e.faultstring}")
    user = args.user or config.system.user

    async def run(reactor: Any) -> None:
        try:
            await apikeyCreate(reactor, config, user, metadata, stdout, scopes)
        except StoreError as e:
            # not the URL: a MongoDB URL may carry a password
            stderr.write(f"bwcd-admin: the store cannot be used: {e}\n")
            raise SystemExit(1)
        except Exception as e:
            stderr.write(f"bwcd-admin: could not create the key: {e.__class__.__name__}: {e}\n")
            raise SystemExit(1)

    task.react(lambda reactor: ensureDeferred(run(reactor)))
    return 0  # react() exits the process; this is never reached


def runPurge(config: Config, before: str, kinds: Sequence[str], batchSize: int, stdout: IO[str], stderr: IO[str]) -> int:
    if batchSize < 1:
        stderr.write("bwcd-admin: --batch-size: must be at least 1\n")
        return 2

    async def run(reactor: Any) -> None:
        try:
            counts = await purge(reactor, config, before, kinds, stdout, batchSize)
        except StoreError as e:
            stderr.write(f"bwcd-admin: the store cannot be used: {e}\n")
            raise SystemExit(1)
        except Exception as e:
            stderr.write(f"bwcd-admin: the purge failed: {e.__class__.__name__}: {e}\n")
            raise SystemExit(1)
        if counts is None:
            stderr.write("bwcd-admin: another bwcd process is purging now; try again later\n")
            raise SystemExit(1)

    task.react(lambda reactor: ensureDeferred(run(reactor)))
    return 0  # react() exits the process; this is never reached


if __name__ == "__main__":
    sys.exit(main())
