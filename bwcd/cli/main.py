# -*- test-case-name: tests.test_cli_main -*-
"""
The C{bwc} (and C{st2}) entry point.

Parsing happens before Twisted or treq is imported, so C{-h} and usage
errors are instant; a command then runs in one reactor run
(C{task.react}). Every expected failure ends as C{ERROR: <message>} and an
exit code (1, or 2 for st2's "operation failed"), never a traceback; an
unexpected one prints its traceback only under C{--debug}.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import IO, List, Mapping, Optional

from bwcd.cli.errors import CLIError, OperationFailed

VERSION = "0.1.0"

#: command line flags that feed the settings (argparse dest -> settings key)
SETTING_FLAGS = (
    "base_url",
    "api_url",
    "auth_url",
    "stream_url",
    "api_version",
    "cacert",
    "config_file",
    "skip_config",
    "debug",
    "token",
    "api_key",
    "basic_auth",
)


def programName(argv0: Optional[str]) -> str:
    name = os.path.basename(argv0 or "")
    return name if name in ("bwc", "st2") else "bwc"


def buildParser(prog: str = "bwc") -> argparse.ArgumentParser:
    from bwcd.cli.commands import registerAll

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Command line client for bwcd (StackStorm compatible). Settings come from flags, then "
        "~/.st2/config, then ST2_*/BWC_* environment variables.",
    )
    parser.add_argument("--version", action="version", version=f"{prog} {VERSION} (bwcd)")
    parser.add_argument("--url", dest="base_url", help="Base URL for the API servers (default http://127.0.0.1). Env: ST2_BASE_URL.")
    parser.add_argument("--auth-url", dest="auth_url", help="URL for the authentication service (default <base>:9100). Env: ST2_AUTH_URL.")
    parser.add_argument("--api-url", dest="api_url", help="URL for the API server, including the version (default <base>:9101/v1). Env: ST2_API_URL.")
    parser.add_argument("--stream-url", dest="stream_url", help="URL for the stream endpoint. Env: ST2_STREAM_URL.")
    parser.add_argument("--api-version", dest="api_version", help="API version to use (default v1). Env: ST2_API_VERSION.")
    parser.add_argument("--cacert", dest="cacert", help="Path to the CA certificate bundle for verifying HTTPS servers. Env: ST2_CACERT.")
    parser.add_argument("--basic-auth", dest="basic_auth", help="user:password for HTTP basic authentication in front of the API.")
    parser.add_argument("--config-file", dest="config_file", help="Path to the CLI config file (default ~/.st2/config). Env: ST2_CONFIG_FILE.")
    parser.add_argument("--print-config", dest="print_config", action="store_true", help="Parse the config file and print the values.")
    parser.add_argument("--skip-config", dest="skip_config", action="store_true", help="Don't parse the config file. Env: ST2_CLI_SKIP_CONFIG=1.")
    parser.add_argument("--debug", dest="debug", action="store_true", help="Print every HTTP request as a curl command with its raw response.")
    subparsers = parser.add_subparsers(title="commands", metavar="{command}", dest="command")
    registerAll(subparsers)
    return parser


def settingFlags(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name, None) for name in SETTING_FLAGS}


def printClientSettings(settings, out: IO[str]) -> None:
    out.write(
        "\nCLI settings:\n----------------\n"
        f"Config file path: {settings.configPath}\n"
        "Client settings:\n----------------\n"
        f"ST2_BASE_URL: {settings.baseURL}\n"
        f"ST2_AUTH_URL: {settings.authURL}\n"
        f"ST2_API_URL: {settings.apiURL}\n\n"
    )


async def runCommand(
    reactor,
    args: argparse.Namespace,
    out: IO[str],
    err: IO[str],
    environ: Mapping[str, str],
) -> int:
    """
    Resolve settings, authenticate if needed, run the handler, and turn
    every failure into its message and exit code.
    """
    from bwcd.cli.config import resolveSettings
    from bwcd.cli.http import CLIHTTPClient
    from bwcd.cli.session import Session, stdoutIsColorTerminal

    settings = None
    http = None
    try:
        settings = resolveSettings(settingFlags(args), environ)
        http = CLIHTTPClient(reactor, out, debug=settings.debug, cacert=settings.cacert)
        session = Session(reactor, settings, http, out, err, color=stdoutIsColorTerminal(out), prog=getattr(args, "prog", "bwc"))
        if args.needsAuth:
            await session.authenticate()
        code = await args.handler(session, args)
        return int(code or 0)
    except OperationFailed as e:
        return e.exitCode
    except CLIError as e:
        out.write(f"ERROR: {e}\n")
        if settings is not None and settings.debug:
            printClientSettings(settings, out)
        return e.exitCode
    except Exception as e:
        out.write(f"ERROR: {e.__class__.__name__}: {e}\n")
        if settings is not None and settings.debug:
            printClientSettings(settings, out)
            traceback.print_exc(file=out)
        return 1
    finally:
        out.flush()
        if http is not None:
            try:
                await http.close()
            except Exception:
                pass


def printConfig(args: argparse.Namespace, out: IO[str], environ: Mapping[str, str]) -> int:
    from bwcd.cli.config import configFilePath, formatConfig, readConfigFile

    try:
        path, explicit = configFilePath(args.config_file, environ)
        config = readConfigFile(path, mustExist=explicit)
    except CLIError as e:
        out.write(f"ERROR: {e}\n")
        return e.exitCode
    out.write(formatConfig(config) + "\n")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """
    Parse C{argv} (default C{sys.argv[1:]}), run the command in one reactor
    run and return the exit code.
    """
    prog = programName(sys.argv[0] if sys.argv else None)
    parser = buildParser(prog)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    args.prog = prog
    environ = os.environ
    if args.print_config:
        return printConfig(args, sys.stdout, environ)
    if not args.command:
        parser.print_help()
        return 2
    if args.handler is None:
        parser.parse_args([args.command, "-h"])
        return 2
    result: List[Optional[int]] = [None]

    async def _main(reactor) -> None:
        result[0] = await runCommand(reactor, args, sys.stdout, sys.stderr, environ)

    from twisted.internet import task

    try:
        task.react(_main)
    except SystemExit:
        pass
    except KeyboardInterrupt:
        return 130
    if result[0] is None:
        sys.stdout.write("\n")
        return 130
    return result[0]


if __name__ == "__main__":
    sys.exit(main())
