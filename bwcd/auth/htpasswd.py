# -*- test-case-name: tests.test_auth -*-
"""
The users file: Apache htpasswd lines with bcrypt hashes, as written by
C{htpasswd -B} or by C{bwcd-admin user-add}.

Only bcrypt is accepted.  The older htpasswd schemes (MD5-crypt, SHA-1,
crypt) are fast to brute-force, so a line using one is ignored with a warning
instead of being silently trusted.

The file is re-read when it changes on disk, so a user added with
C{bwcd-admin} can log in without a restart.

Checks are limited (L{bwcd.auth.limits}): per client address, and in how
many may wait for or hold a pool thread, so a flood of logins is refused
with 429 instead of delaying every other request.
"""

from __future__ import annotations

import os
import tempfile
from typing import Dict, Optional, Tuple

import bcrypt
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from bwcd.auth.limits import BoundedGate, RateLimiter, tooMany
from bwcd.errors import TooMany

log = Logger(namespace="bwcd.auth")

#: a valid hash of nothing anyone knows, checked for unknown users so that a
#: wrong user name costs as much time as a wrong password
_DUMMY_HASH = b"$2b$12$6Y24IcOtZ9j6rnIbjMFqi.7M/Rj5QobXr9q4Yc.JZPQU3l2AC2gwy"

_BCRYPT_PREFIXES = (b"$2y$", b"$2b$", b"$2a$")

#: bcrypt looks at no more than this many bytes of a password
MAX_PASSWORD_BYTES = 72

DEFAULT_ROUNDS = 12

FILE_MODE = 0o640


class UsersFileError(Exception):
    """
    The users file cannot be written, or a name or password is unusable.
    """


def _normalise(hashed: bytes) -> bytes:
    # $2y$ (PHP/Apache) and $2a$ are the same algorithm as $2b$ for any
    # password bcrypt accepts.
    if hashed.startswith((b"$2y$", b"$2a$")):
        return b"$2b$" + hashed[4:]
    return hashed


def checkPassword(password: str, hashed: bytes) -> bool:
    """
    Whether C{password} matches the bcrypt C{hashed} (C{$2y$}, C{$2b$} or
    C{$2a$}).  Blocking: about a quarter of a second at 12 rounds.
    """
    secret = password.encode("utf-8")[:MAX_PASSWORD_BYTES]
    try:
        return bcrypt.checkpw(secret, _normalise(hashed))
    except ValueError:
        return False


def hashPassword(password: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """
    An htpasswd-style bcrypt hash (C{$2y$}, what C{htpasswd -B} writes, so
    Apache and nginx tools read it too).

    @raise UsersFileError: the password is empty or longer than bcrypt uses.
    """
    secret = password.encode("utf-8")
    if not secret:
        raise UsersFileError("the password is empty")
    if len(secret) > MAX_PASSWORD_BYTES:
        raise UsersFileError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes, which bcrypt cannot use")
    hashed = bcrypt.hashpw(secret, bcrypt.gensalt(rounds))
    return "$2y$" + hashed.decode("ascii")[4:]


def parseUsers(text: str, source: str = "users file") -> Dict[str, bytes]:
    """
    The bcrypt entries of an htpasswd file's text, by user name.
    """
    users: Dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not name:
            log.warn("{source} line {line}: not NAME:HASH, ignored", source=source, line=number)
            continue
        raw = hashed.strip().encode("ascii", "replace")
        if not raw.startswith(_BCRYPT_PREFIXES):
            log.warn(
                "{source} line {line}: user {user} does not have a bcrypt hash (use htpasswd -B), ignored",
                source=source,
                line=number,
                user=name,
            )
            continue
        users[name] = raw
    return users


def validUserName(name: str) -> bool:
    return bool(name) and not any(c in name for c in ":\r\n") and name == name.strip()


class Htpasswd:
    """
    Password checks against an htpasswd file.

    @param reactor: when given, bcrypt runs in its thread pool so that a
        login does not stall every other request; C{None} checks inline.
    @param limiter: the per-client-address rate limit for checks that name
        a client; by default 20 at once then one every 2 seconds, on the
        reactor's clock (none without a reactor).
    @param gate: bounds the checks running on and waiting for pool threads;
        by default 2 running and 32 waiting (none without a reactor, where
        checks run inline).
    """

    def __init__(
        self,
        path: str,
        reactor=None,
        limiter: Optional[RateLimiter] = None,
        gate: Optional[BoundedGate] = None,
    ) -> None:
        self.path = path
        self._reactor = reactor
        self._stamp: Optional[Tuple[int, int, int]] = None
        self._users: Dict[str, bytes] = {}
        if limiter is None and reactor is not None:
            limiter = RateLimiter(reactor)
        if gate is None and reactor is not None:
            gate = BoundedGate()
        self.limiter = limiter
        self.gate = gate

    def _current(self) -> Dict[str, bytes]:
        try:
            st = os.stat(self.path)
        except OSError:
            if self._stamp != (0, 0, 0):
                log.warn("Users file {path} cannot be read; password logins are refused", path=self.path)
            self._stamp = (0, 0, 0)
            self._users = {}
            return self._users
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            try:
                with open(self.path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError as e:
                log.warn("Users file {path} cannot be read: {error}", path=self.path, error=e.strerror)
                self._users = {}
            else:
                self._users = parseUsers(text, self.path)
            self._stamp = stamp
        return self._users

    def users(self) -> frozenset:
        return frozenset(self._current())

    def check(self, user: str, password: str, client: Optional[str] = None) -> Deferred[bool]:
        """
        Whether C{user} exists and C{password} is theirs.

        @param client: the caller's address; when given, its rate limit
            applies.
        @return: fails with L{bwcd.errors.TooMany} (with C{Retry-After})
            when C{client} is over its rate or too many checks are queued.
        """
        if client is not None and self.limiter is not None:
            wait = self.limiter.take(client)
            if wait is not None:
                log.info("Refused password login from {client}: over the rate limit", client=client)
                return fail(tooMany(wait))
        hashed = self._current().get(user)
        known = hashed is not None
        if hashed is None:
            hashed = _DUMMY_HASH

        def run() -> bool:
            return checkPassword(password, hashed) and known

        if self._reactor is None:
            return succeed(run())
        reactor = self._reactor

        def inThread() -> Deferred[bool]:
            return deferToThreadPool(reactor, reactor.getThreadPool(), run)

        if self.gate is None:
            return inThread()
        try:
            return self.gate.run(inThread)
        except TooMany as e:
            log.info("Refused password login: {queued} checks already waiting", queued=self.gate.queued)
            return fail(e)


def setPassword(path: str, user: str, password: str, rounds: int = DEFAULT_ROUNDS) -> bool:
    """
    Add C{user} to the htpasswd file at C{path} or change their password,
    creating the file (mode 0640) when needed.  The file is replaced
    atomically, keeping its mode and group, so the daemon never reads half a
    file.

    @return: whether the user is new.
    @raise UsersFileError: bad name or password, or the file cannot be
        written.
    """
    if not validUserName(user):
        raise UsersFileError(f"invalid user name {user!r}: it must be non-empty, without ':' or line breaks")
    line = f"{user}:{hashPassword(password, rounds)}"
    lines = []
    mode, owner = FILE_MODE, None
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        st = os.stat(path)
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        # A new file takes its folder's group (e.g. root:bwcd /etc/bwcd), so
        # that the daemon can read what an administrator running as root wrote.
        try:
            owner = (-1, os.stat(os.path.dirname(os.path.abspath(path))).st_gid)
        except OSError:
            owner = None
    except OSError as e:
        raise UsersFileError(f"cannot read {path}: {e.strerror}")
    created = True
    out = []
    for existing in lines:
        if existing.partition(":")[0] == user and ":" in existing:
            if created:
                out.append(line)
            created = False
            continue
        out.append(existing)
    if created:
        out.append(line)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".htpasswd.", dir=folder)
    except OSError as e:
        raise UsersFileError(f"cannot write in {folder}: {e.strerror}")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            if owner is not None:
                try:
                    os.fchown(f.fileno(), *owner)
                except OSError:
                    try:
                        os.fchown(f.fileno(), -1, owner[1])
                    except OSError:
                        pass
            f.write("\n".join(out) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UsersFileError(f"cannot write {path}: {e.strerror}")
    return created


__all__ = [
    "DEFAULT_ROUNDS",
    "Htpasswd",
    "UsersFileError",
    "checkPassword",
    "hashPassword",
    "parseUsers",
    "setPassword",
    "validUserName",
]
