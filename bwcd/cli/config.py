# -*- test-case-name: tests.test_cli_config -*-
"""
Where the CLI finds the daemon and which credentials it sends.

StackStorm's client resolves every URL as I{flag > config file > environment
> default} (its code merges the config file over the environment, whatever its
docs say), and scripts written for C{st2} depend on that, so the same order
is kept here. C{BWC_*} variables are accepted beside C{ST2_*} and win when
both are set, so one shell can hold settings for both tools.

The token cache is the same file st2 uses (C{~/.st2/token-<user>}) so that a
token obtained by either tool is reused by the other.
"""

from __future__ import annotations

import calendar
import configparser
import json
import os
import re
import stat
import time
from typing import Any, Dict, Mapping, Optional

import attrs

from bwcd.cli.errors import CLIError

DEFAULT_BASE_URL = "http://127.0.0.1"
DEFAULT_API_VERSION = "v1"
DEFAULT_API_PORT = 9101
DEFAULT_AUTH_PORT = 9100
DEFAULT_STREAM_PORT = 9102

#: a cached token counts as expired this many seconds before its expiry
TOKEN_EXPIRATION_GRACE_PERIOD_SECONDS = 15

#: section -> option -> type, as st2client's config_parser.CONFIG_FILE_OPTIONS
CONFIG_FILE_OPTIONS: Dict[str, Dict[str, type]] = {
    "general": {
        "base_url": str,
        "api_version": str,
        "cacert": str,
        "silence_ssl_warnings": bool,
        "silence_schema_output": bool,
    },
    "cli": {"debug": bool, "cache_token": bool, "timezone": str},
    "credentials": {"username": str, "password": str, "api_key": str, "basic_auth": str},
    "api": {"url": str},
    "auth": {"url": str},
    "stream": {"url": str},
}

CONFIG_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "general": {"silence_ssl_warnings": False, "silence_schema_output": True},
    "cli": {"debug": False, "cache_token": True, "timezone": "UTC"},
}


class ConfigError(CLIError):
    """
    The config file or the token cache cannot be used as it is.
    """


def homeDirectory(environ: Mapping[str, str]) -> str:
    return environ.get("HOME") or os.path.expanduser("~")


def configDirectory(environ: Mapping[str, str]) -> str:
    """
    C{~/.st2}: holds the default config file and the token cache, whichever
    config file is in use (as in st2).
    """
    return os.path.join(homeDirectory(environ), ".st2")


def envValue(environ: Mapping[str, str], name: str) -> Optional[str]:
    """
    C{BWC_<name>} if set and not empty, else C{ST2_<name>}, else None.
    """
    for prefix in ("BWC_", "ST2_"):
        value = environ.get(prefix + name)
        if value:
            return value
    return None


def _expand(path: str, environ: Mapping[str, str]) -> str:
    if path == "~" or path.startswith("~/"):
        path = homeDirectory(environ) + path[1:]
    return os.path.abspath(path)


def configFilePath(flag: Optional[str], environ: Mapping[str, str]) -> tuple[str, bool]:
    """
    The config file to read and whether it was named explicitly (flag or
    environment); a named file must exist, the default one may not.
    """
    default = os.path.join(configDirectory(environ), "config")
    chosen = flag or envValue(environ, "CONFIG_FILE")
    if not chosen:
        return default, False
    path = _expand(chosen, environ)
    return path, path != default


def _parseBool(section: str, option: str, raw: str, path: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ConfigError(f'Config "{path}": [{section}] {option} must be true or false, got "{raw}"')


def _defaults() -> Dict[str, Dict[str, Any]]:
    return {s: dict(v) for s, v in CONFIG_DEFAULTS.items()}


def readConfigFile(path: str, mustExist: bool) -> Dict[str, Dict[str, Any]]:
    """
    Parse the ini file into typed values; unknown sections and options are
    ignored as st2 does, defaults from L{CONFIG_DEFAULTS} are filled in.
    """
    result = _defaults()
    if not os.path.isfile(path):
        if mustExist:
            raise ConfigError(f'Config "{path}" not found')
        return result
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f'Config "{path}" cannot be read: {getattr(e, "strerror", None) or e}')
    except configparser.Error as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f'Config "{path}" is not a valid ini file: {first}')
    for section, options in CONFIG_FILE_OPTIONS.items():
        if not parser.has_section(section):
            continue
        for option, kind in options.items():
            if not parser.has_option(section, option):
                continue
            raw = parser.get(section, option)
            value: Any = _parseBool(section, option, raw, path) if kind is bool else raw
            result.setdefault(section, {})[option] = value
    return result


@attrs.frozen
class Settings:
    """
    Everything a command needs to reach the daemon, already resolved.
    """

    baseURL: str
    apiURL: str
    authURL: str
    streamURL: str
    apiVersion: str
    cacert: Optional[str]
    token: Optional[str]
    apiKey: Optional[str]
    basicAuth: Optional[str]
    username: Optional[str]
    password: Optional[str]
    cacheToken: bool
    debug: bool
    timezone: str
    configPath: str
    configDir: str
    skipConfig: bool
    #: where the API key came from ("flag", "config", "env") for messages
    apiKeySource: Optional[str] = None

    @property
    def credentialsGiven(self) -> bool:
        """
        A token or API key was given: no automatic login.
        """
        return bool(self.token or self.apiKey)


def _first(*values: Optional[str]) -> Optional[str]:
    for value in values:
        if value:
            return value
    return None


def resolveSettings(flags: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """
    Merge flags, the config file, the environment and defaults.

    @param flags: global and per-command options by name: C{base_url,
        api_url, auth_url, stream_url, api_version, cacert, config_file,
        skip_config, debug, token, api_key, basic_auth}; None means unset.
    """
    skipEnv = envValue(environ, "CLI_SKIP_CONFIG")
    skipConfig = bool(flags.get("skip_config")) or (skipEnv not in (None, "0", "false", "False"))
    path, explicit = configFilePath(flags.get("config_file"), environ)
    config = _defaults() if skipConfig else readConfigFile(path, mustExist=explicit)

    def conf(section: str, option: str) -> Any:
        return config.get(section, {}).get(option)

    apiVersion = _first(flags.get("api_version"), conf("general", "api_version"), envValue(environ, "API_VERSION")) or DEFAULT_API_VERSION
    base = (_first(flags.get("base_url"), conf("general", "base_url"), envValue(environ, "BASE_URL")) or DEFAULT_BASE_URL).rstrip("/")
    api = _first(flags.get("api_url"), conf("api", "url"), envValue(environ, "API_URL")) or f"{base}:{DEFAULT_API_PORT}/{apiVersion}"
    auth = _first(flags.get("auth_url"), conf("auth", "url"), envValue(environ, "AUTH_URL")) or f"{base}:{DEFAULT_AUTH_PORT}"
    stream = _first(flags.get("stream_url"), conf("stream", "url"), envValue(environ, "STREAM_URL")) or f"{base}:{DEFAULT_STREAM_PORT}/{apiVersion}"
    cacert = _first(flags.get("cacert"), conf("general", "cacert"), envValue(environ, "CACERT"))
    if cacert:
        cacert = _expand(cacert, environ)

    token = _first(flags.get("token"), envValue(environ, "AUTH_TOKEN"))
    apiKeySource = None
    apiKey = None
    for source, value in (("flag", flags.get("api_key")), ("config", conf("credentials", "api_key")), ("env", envValue(environ, "API_KEY"))):
        if value:
            apiKey, apiKeySource = value, source
            break
    debug = bool(flags.get("debug")) or bool(conf("cli", "debug"))
    return Settings(
        baseURL=base,
        apiURL=api.rstrip("/"),
        authURL=auth.rstrip("/"),
        streamURL=stream.rstrip("/"),
        apiVersion=apiVersion,
        cacert=cacert,
        token=token,
        apiKey=apiKey,
        basicAuth=_first(flags.get("basic_auth"), conf("credentials", "basic_auth")),
        username=conf("credentials", "username"),
        password=conf("credentials", "password"),
        cacheToken=bool(conf("cli", "cache_token")),
        debug=debug,
        timezone=conf("cli", "timezone") or "UTC",
        configPath=path,
        configDir=configDirectory(environ),
        skipConfig=skipConfig,
        apiKeySource=apiKeySource,
    )


# ---------------------------------------------------------------------------
# token cache

_EXPIRY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$")


def expiryToTimestamp(expiry: str) -> int:
    """
    Unix seconds for a token C{expiry} such as C{2026-01-02T03:04:05.123456Z};
    an offset-less value is UTC as in st2.
    """
    match = _EXPIRY.match(expiry.strip())
    if not match:
        raise ValueError(f"unrecognised expiry timestamp {expiry!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    offset = match.group(8)
    if offset and offset != "Z":
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds


def cachedTokenPath(configDir: str, username: str) -> str:
    return os.path.abspath(os.path.join(configDir, f"token-{username}"))


@attrs.frozen
class CachedToken:
    token: str
    expireTimestamp: int
    #: set when the file is readable by others (st2 only warns)
    permissiveMode: Optional[str] = None


def readCachedToken(path: str, now: Optional[float] = None) -> Optional[CachedToken]:
    """
    The cached token if the file exists and the token is still good for at
    least L{TOKEN_EXPIRATION_GRACE_PERIOD_SECONDS}; None otherwise.

    @raise ConfigError: the file exists but is not the expected JSON.
    """
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        return None
    mode = stat.S_IMODE(os.stat(path).st_mode)
    permissive = oct(mode) if mode & stat.S_IROTH else None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        token = data["token"]
        expire = int(data["expire_timestamp"])
        if not isinstance(token, str):
            raise ValueError("token is not a string")
    except Exception as e:
        raise ConfigError(f'File "{path}" with cached token is corrupted or invalid ({e}). Please delete this file')
    now = time.time() if now is None else now
    if expire - TOKEN_EXPIRATION_GRACE_PERIOD_SECONDS < now:
        return None
    return CachedToken(token=token, expireTimestamp=expire, permissiveMode=permissive)


def _ensurePrivateDirectory(directory: str) -> None:
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)


def writeCachedToken(configDir: str, username: str, token: str, expireTimestamp: int) -> str:
    """
    Write C{{"token", "expire_timestamp"}} readable by the owner only.

    The file is created with mode 0600 in one step (never open-then-chmod)
    and an existing file is narrowed to 0600 before the token is written.
    """
    _ensurePrivateDirectory(configDir)
    path = cachedTokenPath(configDir, username)
    data = json.dumps({"token": token, "expire_timestamp": int(expireTimestamp)})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data.encode("utf-8"))
    finally:
        os.close(fd)
    return path


def saveLoginCredentials(configPath: str, username: str, password: Optional[str]) -> None:
    """
    Rewrite C{[credentials]} as C{st2 login} does: set C{username}, and keep
    C{password} only when given (C{-w}); other sections are preserved.
    """
    parser = configparser.ConfigParser(interpolation=None)
    existed = os.path.exists(configPath)
    if existed:
        try:
            parser.read(configPath, encoding="utf-8")
        except configparser.Error as e:
            raise ConfigError(f'Config "{configPath}" is not a valid ini file: {str(e).splitlines()[0]}')
    if not parser.has_section("credentials"):
        parser.add_section("credentials")
    parser.set("credentials", "username", username)
    if password is not None:
        parser.set("credentials", "password", password)
    else:
        parser.remove_option("credentials", "password")
    _ensurePrivateDirectory(os.path.dirname(configPath))
    fd = os.open(configPath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        parser.write(f)


def formatConfig(config: Mapping[str, Mapping[str, Any]]) -> str:
    """
    C{--print-config}: the effective file options, one section at a time.
    """
    lines = []
    for section, options in config.items():
        lines.append(f"[{section}]")
        for name, value in options.items():
            lines.append(f"{name} = {value}")
    return "\n".join(lines)

