# -*- test-case-name: tests.test_runner_params -*-
"""
The runner types bwcd provides, as the documents StackStorm serves from
C{/v1/runnertypes}.

They are data, not code, because clients (the CLI's C{st2 run} help, the web
UI's parameter forms) read C{runner_parameters} to learn which parameters an
action takes, and because L{bwcd.execution.runners.params.mergeSchema} merges them with
the action's own parameters to build the validation schema.  Names, types and
defaults are exactly those of st2's C{local_runner/runner.yaml} and
C{http_runner/runner.yaml}.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any, Dict, List

LOCAL_SHELL_CMD = "local-shell-cmd"
LOCAL_SHELL_SCRIPT = "local-shell-script"
HTTP_REQUEST = "http-request"

_DESCRIPTION = "A runner to execute local actions as a fixed user."

_COMMON_PARAMETERS: Dict[str, Dict[str, Any]] = {
    "cmd": {
        "description": "Arbitrary Linux command to be executed on the local host.",
        "type": "string",
    },
    "cwd": {
        "description": "Working directory where the command will be executed in",
        "type": "string",
    },
    "env": {
        "description": "Environment variables which will be available to the command "
        "(e.g. key1=val1,key2=val2)",
        "type": "object",
    },
    "kwarg_op": {
        "default": "--",
        "description": 'Operator to use in front of keyword args i.e. "--" or "-".',
        "type": "string",
    },
    "sudo": {
        "default": False,
        "description": "The command will be executed with sudo.",
        "type": "boolean",
    },
    "sudo_password": {
        "default": None,
        "description": "Sudo password. To be used when passwordless sudo is not allowed.",
        "type": "string",
        "required": False,
        "secret": True,
    },
    "timeout": {
        "default": 60,
        "description": "Action timeout in seconds. Action will get killed if it "
        "doesn't finish in timeout seconds.",
        "type": "integer",
    },
}

_SCRIPT_ONLY_PARAMETERS: Dict[str, Dict[str, Any]] = {
    "debug": {
        "default": False,
        "description": "Enable runner debug mode.",
        "type": "boolean",
    },
    "content_version": {
        "description": "Git revision of the pack content to use for this action "
        "execution (git commit sha / tag / branch). Only applies to packs which "
        "are git repositories.",
        "type": "string",
    },
}

_HTTP_PARAMETERS: Dict[str, Dict[str, Any]] = {
    "allow_redirects": {
        "default": False,
        "description": "Set to True if POST/PUT/DELETE redirect following is allowed.",
        "type": "boolean",
    },
    "cookies": {
        "description": "Optional cookies to send with the request.",
        "type": "object",
    },
    "headers": {
        "description": "HTTP headers for the request.",
        "type": "object",
    },
    "http_proxy": {
        "description": "URL of HTTP proxy to use (e.g. http://10.10.1.10:3128).",
        "type": "string",
    },
    "https_proxy": {
        "description": "URL of HTTPS proxy to use (e.g. http://10.10.1.10:3128).",
        "type": "string",
    },
    "password": {
        "description": "Password required by basic authentication.",
        "type": "string",
        "secret": True,
    },
    "url": {
        "description": "URL to the HTTP endpoint.",
        "required": True,
        "type": "string",
    },
    "username": {
        "description": "Username required by basic authentication.",
        "type": "string",
    },
    "verify_ssl_cert": {
        "default": True,
        "description": "Certificate for HTTPS request is verified by default using requests "
        "CA bundle which comes from Mozilla. Verification using a custom CA bundle "
        "is not yet supported. Set to False to skip verification.",
        "type": "boolean",
    },
    "url_hosts_blacklist": {
        "description": "Optional list of hosts (network locations) to blacklist (e.g. example.com, "
        "127.0.0.1, ::1, etc.). If action will try to access that endpoint, an exception will be "
        "thrown and action will be marked as failed.",
        "required": False,
        "type": "array",
        "items": {"type": "string"},
    },
    "url_hosts_whitelist": {
        "description": "Optional list of hosts (network locations) to whitelist (e.g. example.com, "
        "127.0.0.1, ::1, etc.). If specified, actions will only be able to hit hosts on this "
        "whitelist.",
        "required": False,
        "type": "array",
        "items": {"type": "string"},
    },
}

_HTTP_OUTPUT_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "properties": {
        "status_code": {"type": "integer"},
        "body": {
            "anyOf": [
                {"type": "object"},
                {"type": "string"},
                {"type": "integer"},
                {"type": "number"},
                {"type": "boolean"},
                {"type": "array"},
                {"type": "null"},
            ]
        },
        "parsed": {"type": "boolean"},
        "headers": {"type": "object"},
    },
    "additionalProperties": False,
}

RUNNER_TYPES: Dict[str, Dict[str, Any]] = {
    LOCAL_SHELL_CMD: {
        "name": LOCAL_SHELL_CMD,
        "description": _DESCRIPTION,
        "enabled": True,
        "runner_package": "local_runner",
        "runner_module": "local_shell_command_runner",
        "runner_parameters": _COMMON_PARAMETERS,
    },
    LOCAL_SHELL_SCRIPT: {
        "name": LOCAL_SHELL_SCRIPT,
        "description": _DESCRIPTION,
        "enabled": True,
        "runner_package": "local_runner",
        "runner_module": "local_shell_script_runner",
        "runner_parameters": {**_COMMON_PARAMETERS, **_SCRIPT_ONLY_PARAMETERS},
    },
    HTTP_REQUEST: {
        "name": HTTP_REQUEST,
        "description": "HTTP client for running HTTP actions.",
        "enabled": True,
        "runner_package": "http_runner",
        "runner_module": "http_runner",
        "runner_parameters": _HTTP_PARAMETERS,
        "output_key": "body",
        "output_schema": _HTTP_OUTPUT_SCHEMA,
    },
}


def runnerNames() -> List[str]:
    """
    The runner type names, sorted, as C{GET /v1/runnertypes} lists them.
    """
    return sorted(RUNNER_TYPES)


def runnerTypeId(name: str) -> str:
    """
    A stable id for a runner type, derived from its name so that every bwcd
    instance (and every restart) serves the same id, while still looking like
    the ObjectId (24 hex digits) that st2 clients expect.
    """
    return hashlib.sha1(b"runner_type:" + name.encode("utf-8")).hexdigest()[:24]


def runnerParameters(name: str) -> Dict[str, Dict[str, Any]]:
    """
    A deep copy of one runner's parameter definitions, safe to mutate.

    @raise KeyError: for an unknown runner name.
    """
    return copy.deepcopy(RUNNER_TYPES[name]["runner_parameters"])


def runnerTypeDict(name: str) -> Dict[str, Any]:
    """
    The RunnerType API document for C{name} (a fresh copy each call, because
    callers embed it in execution documents they go on to modify).

    @raise KeyError: for an unknown runner name.
    """
    doc = copy.deepcopy(RUNNER_TYPES[name])
    return {
        "id": runnerTypeId(name),
        "uid": "runner_type:" + name,
        **doc,
    }
