# -*- test-case-name: tests.test_errors -*-
"""
The errors domain code raises, each standing for one kind of answer.

Domain modules (rules, execution, auth, packs, store users) know nothing of
HTTP; they raise these.  The API layer turns each kind into its status code
in one place (L{bwcd.api.framework}), so a route never has to guess which
exception means "404" and a lower layer never imports the API.

Every error carries the exact text a client sees (StackStorm's faultstrings
where st2 has one), plus optional C{extra} fields for the JSON body and
C{headers} (for instance C{Retry-After}).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional


class DomainError(Exception):
    """
    Base class: C{faultstring} is shown to the client as it is.
    """

    def __init__(
        self,
        faultstring: str,
        extra: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        super().__init__(faultstring)
        self.faultstring = faultstring
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})


class Invalid(DomainError):
    """
    The request is malformed or breaks a rule of the domain (400).
    """


class Unauthenticated(DomainError):
    """
    No credential, or one that is unknown, expired or disabled (401).
    """


class Refused(DomainError):
    """
    The caller is known but may not do this (403).
    """


class NotFound(DomainError):
    """
    The thing named does not exist (404).
    """


class Conflict(DomainError):
    """
    The change clashes with what is stored (409).
    """


class TooLarge(DomainError):
    """
    The request body is larger than allowed (413).
    """


class UnsupportedMediaType(DomainError):
    """
    The request body's content type is not accepted here (415).
    """


class TooMany(DomainError):
    """
    The caller is over a rate limit (429); C{headers} carries Retry-After.
    """


class Unavailable(DomainError):
    """
    bwcd cannot take this now (503): queue full, store down, shutting
    down.  C{headers} carries Retry-After.
    """


def duplicateConflict(detail: str, conflictId: Optional[str]) -> Conflict:
    """
    StackStorm's answer to a unique-key clash (a rule, key or record that
    already exists), naming the stored document the new one clashes with,
    so that every layer that meets a duplicate words it the same way.
    """
    return Conflict(f"Tried to save duplicate unique keys ({detail})", extra={"conflict-id": conflictId})


__all__ = [
    "DomainError",
    "duplicateConflict",
    "Invalid",
    "Unauthenticated",
    "Refused",
    "NotFound",
    "Conflict",
    "TooLarge",
    "UnsupportedMediaType",
    "TooMany",
    "Unavailable",
]
