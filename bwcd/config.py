# -*- test-case-name: tests.test_config -*-
"""
The daemon's configuration: one YAML file read once at start.

Every key is checked here, before any service starts, so that a typo makes
C{twistd} exit at once with one line naming the key, instead of surfacing as a
strange failure minutes later.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import attrs
import yaml

SYSTEM_CONFIG = "/etc/bwcd/bwcd.yaml"


class ConfigError(Exception):
    """
    The configuration is unusable; the message names the key and the problem.
    """


@attrs.frozen
class ApiConfig:
    listen: str = "tcp:9101:interface=127.0.0.1"
    public_url: str = "http://127.0.0.1:9101"
    max_body_bytes: int = 1048576
    #: addresses whose X-Forwarded-For / X-Forwarded-Proto headers are believed
    trusted_proxies: tuple = ("127.0.0.1", "::1")
    #: base of execution web_url links (st2's [webui] webui_base_url)
    webui_base_url: str = ""
    #: serve Prometheus metrics at /metrics on the API listener
    metrics: bool = True
    #: browser origins (scheme://host[:port]) that get CORS headers, as st2's
    #: api.allow_origin; "*" allows any origin; empty (the default) sends none
    allow_origins: tuple = ()


@attrs.frozen
class AuthConfig:
    enable: bool = True
    listen: str = "tcp:9100:interface=127.0.0.1"
    users_file: str = ""
    token_ttl: int = 86400
    token_max_ttl: int = 86400


@attrs.frozen
class StorageConfig:
    url: str = ""


@attrs.frozen
class PacksConfig:
    paths: tuple = ()


@attrs.frozen
class RunnerConfig:
    max_concurrent: int = 16
    #: executions waiting for a slot; beyond it new webhooks and execution
    #: requests get 503 with Retry-After instead of growing the queue
    max_queued: int = 10000
    output_max_bytes: int = 4194304
    #: the largest execution result stored (its JSON size); a bigger one is
    #: cut and says "truncated": true.  Below MongoDB's 16 MiB document limit.
    result_max_bytes: int = 12582912
    #: seconds between SIGTERM and SIGKILL when a process group is stopped
    kill_grace: float = 2.0
    #: seconds without a heartbeat after which another bwcd process sharing
    #: the store counts as dead, and its executions are settled
    node_timeout: float = 30.0


@attrs.frozen
class SystemConfig:
    #: the user that rule-started executions run as in context.user (st2's stanley)
    user: str = "stanley"
    #: where default paths (database, users file) live
    state_dir: str = "var"


@attrs.frozen
class DatastoreConfig:
    #: st2's JSON AES key file for secret values (created 0600 at first
    #: start when missing); default <state_dir>/datastore_key.json
    encryption_key_path: str = ""


@attrs.frozen
class StreamConfig:
    #: the stream listener (st2stream's port): /stream and /v1/stream
    listen: str = "tcp:9102:interface=127.0.0.1"
    #: seconds between keep-alive comments on open streams
    heartbeat: float = 15.0
    #: recent events kept for clients resuming with Last-Event-ID
    buffer_events: int = 1000


@attrs.frozen
class RetentionConfig:
    #: days after which documents are deleted (st2's garbagecollector TTLs);
    #: 0, the default, keeps them forever.  Unfinished executions and
    #: unprocessed trigger instances are never deleted.
    executions: int = 0
    execution_output: int = 0
    trigger_instances: int = 0
    rule_enforcements: int = 0
    #: seconds between purges (st2's collection_interval)
    interval: float = 600.0
    #: documents found and deleted per store call
    batch_size: int = 100
    #: seconds given back to the reactor between batches
    pause: float = 0.1


@attrs.frozen
class Config:
    api: ApiConfig = ApiConfig()
    auth: AuthConfig = AuthConfig()
    storage: StorageConfig = StorageConfig()
    packs: PacksConfig = PacksConfig()
    runner: RunnerConfig = RunnerConfig()
    system: SystemConfig = SystemConfig()
    datastore: DatastoreConfig = DatastoreConfig()
    stream: StreamConfig = StreamConfig()
    retention: RetentionConfig = RetentionConfig()
    #: the file this came from, or None for built-in defaults
    source: Optional[str] = None


_SECTIONS = {
    "api": ApiConfig,
    "auth": AuthConfig,
    "storage": StorageConfig,
    "packs": PacksConfig,
    "runner": RunnerConfig,
    "system": SystemConfig,
    "datastore": DatastoreConfig,
    "stream": StreamConfig,
    "retention": RetentionConfig,
}

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", float: "a number", tuple: "a list"}


def _expectedType(cls: type, name: str) -> type:
    default = attrs.fields_dict(cls)[name].default
    return type(default)


def _coerce(key: str, value: Any, expected: type) -> Any:
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif expected is tuple:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        if isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of strings")
    elif isinstance(value, expected):
        return value
    raise ConfigError(f"{key}: expected {_TYPE_NAMES[expected]}, got {type(value).__name__} {value!r}")


def parseConfig(data: Any, source: Optional[str] = None, environ: Mapping[str, str] = os.environ) -> Config:
    """
    Build a L{Config} from the decoded YAML, filling defaults and deriving the
    paths that live under the state folder.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("(top level): expected a mapping of sections")
    sections: dict = {}
    for section, value in data.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{section}: unknown section (known: {', '.join(sorted(_SECTIONS))})")
        cls = _SECTIONS[section]
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{section}: expected a mapping")
        known = attrs.fields_dict(cls)
        kwargs = {}
        for name, item in value.items():
            key = f"{section}.{name}"
            if name not in known:
                raise ConfigError(f"{key}: unknown key (known: {', '.join(sorted(known))})")
            kwargs[name] = _coerce(key, item, _expectedType(cls, name))
        sections[section] = cls(**kwargs)
    config = Config(source=source, **sections)
    return _derive(config, environ)


def _derive(config: Config, environ: Mapping[str, str]) -> Config:
    system = config.system
    stateDir = os.path.abspath(environ.get("BWCD_STATE_DIR") or system.state_dir)
    system = attrs.evolve(system, state_dir=stateDir)
    storage = config.storage
    if not storage.url:
        storage = attrs.evolve(storage, url="sqlite://" + os.path.join(stateDir, "bwcd.sqlite"))
    scheme = storage.url.split(":", 1)[0]
    if scheme not in ("sqlite", "mongodb"):
        raise ConfigError(f"storage.url: unknown scheme '{scheme}' (use sqlite:///PATH or mongodb://HOST:PORT/DB)")
    auth = config.auth
    if not auth.users_file:
        auth = attrs.evolve(auth, users_file=os.path.join(stateDir, "htpasswd"))
    elif not os.path.isfile(auth.users_file):
        raise ConfigError(f"auth.users_file: no such file {auth.users_file!r}")
    for key, value in (
        ("auth.token_ttl", auth.token_ttl),
        ("auth.token_max_ttl", auth.token_max_ttl),
        ("api.max_body_bytes", config.api.max_body_bytes),
        ("runner.max_concurrent", config.runner.max_concurrent),
        ("runner.max_queued", config.runner.max_queued),
        ("runner.output_max_bytes", config.runner.output_max_bytes),
        ("runner.result_max_bytes", config.runner.result_max_bytes),
        ("stream.buffer_events", config.stream.buffer_events),
        ("stream.heartbeat", config.stream.heartbeat),
    ):
        if value < 1:
            raise ConfigError(f"{key}: must be at least 1, got {value}")
    retention = config.retention
    for key in ("executions", "execution_output", "trigger_instances", "rule_enforcements"):
        if getattr(retention, key) < 0:
            raise ConfigError(f"retention.{key}: must be 0 (keep forever) or a number of days, got {getattr(retention, key)}")
    for key in ("interval", "batch_size"):
        if getattr(retention, key) <= 0:
            raise ConfigError(f"retention.{key}: must be more than 0, got {getattr(retention, key)}")
    if retention.pause < 0:
        raise ConfigError(f"retention.pause: must not be negative, got {retention.pause}")
    if auth.token_ttl > auth.token_max_ttl:
        raise ConfigError("auth.token_ttl: must not exceed auth.token_max_ttl")
    if not config.api.public_url.startswith(("http://", "https://")):
        raise ConfigError(f"api.public_url: expected an http:// or https:// URL, got {config.api.public_url!r}")
    for origin in config.api.allow_origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ConfigError(f"api.allow_origins: expected \"*\" or an http:// or https:// origin, got {origin!r}")
    for path in config.packs.paths:
        if not os.path.isdir(path):
            raise ConfigError(f"packs.paths: no such directory {path!r}")
    datastore = config.datastore
    if not datastore.encryption_key_path:
        datastore = attrs.evolve(datastore, encryption_key_path=os.path.join(stateDir, "datastore_key.json"))
    return attrs.evolve(config, system=system, storage=storage, auth=auth, datastore=datastore)


def loadConfig(path: Optional[str] = None, environ: Mapping[str, str] = os.environ) -> Config:
    """
    Read the configuration from C{path}, else C{$BWCD_CONFIG}, else
    L{SYSTEM_CONFIG} if it exists, else the built-in defaults.
    """
    if path is None:
        path = environ.get("BWCD_CONFIG") or None
    if path is None and os.path.exists(SYSTEM_CONFIG):
        path = SYSTEM_CONFIG
    if path is None:
        return parseConfig({}, None, environ)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"--config: cannot read {path!r}: {e.strerror}")
    except yaml.YAMLError as e:
        raise ConfigError(f"--config: {path!r} is not valid YAML: {str(e).splitlines()[0]}")
    return parseConfig(data, path, environ)
