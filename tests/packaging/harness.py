"""
The machinery behind tests.test_packaging: system packages, a clean copy of
the work tree, C{dpkg-buildpackage}, the daemon started the way the installed
systemd unit says (there is no systemd in CI), nginx with the shipped site,
and HTTPS requests that trust only the test's self-signed certificate.

Everything here blocks: the packaging test is a sequence of system commands,
each bounded by its own timeout.
"""

from __future__ import annotations

import grp
import http.client
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import attrs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: systemd's default PATH for services; also the PATH of the build, so that
#: no pyenv shim or project venv stands in for Debian's python3.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: what building the package needs (Build-Depends plus dpkg-buildpackage's own)
BUILD_PACKAGES = ("dpkg-dev", "build-essential", "debhelper", "dh-virtualenv", "python3", "python3-venv", "python3-dev")
#: what the end-to-end run needs besides the package's own dependencies
RUN_PACKAGES = ("adduser", "nginx", "openssl")

#: environment variables passed through to the build: pip's index settings
#: and proxies, so dh-virtualenv's pip reaches what the developer's pip does
_PASSED_PREFIXES = ("PIP_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


class Unavailable(Exception):
    """
    This machine cannot run the packaging test; the message says why.
    """


class CommandFailed(Exception):
    """
    A system command exited non-zero; the message carries the end of its output.
    """


def systemEnvironment(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """
    A minimal environment like the one dpkg or systemd gives, so that the
    test's own virtualenv (PYTHONPATH, VIRTUAL_ENV, pyenv) cannot leak in.
    """
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/root")}
    for name, value in os.environ.items():
        if name.startswith(_PASSED_PREFIXES):
            env[name] = value
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    timeout: float,
    *,
    cwd: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    input: Optional[str] = None,
    logPath: Optional[str] = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """
    Run a command to completion with stdout and stderr merged; with C{logPath}
    the output goes to that file instead of memory.
    """
    env = dict(env) if env is not None else systemEnvironment()
    try:
        if logPath is not None:
            with open(logPath, "ab") as log:
                result = subprocess.run(
                    list(argv), cwd=cwd, env=env, input=input.encode() if input else None,
                    stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                    stdin=None if input else subprocess.DEVNULL,
                )
        else:
            result = subprocess.run(
                list(argv), cwd=cwd, env=env, input=input, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                stdin=None if input else subprocess.DEVNULL,
            )
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{shlex.join(argv)}: no result after {timeout} s" + _tail(logPath))
    if check and result.returncode != 0:
        output = _tail(logPath) if logPath else "\n" + "\n".join((result.stdout or "").splitlines()[-40:])
        raise CommandFailed(f"{shlex.join(argv)} exited {result.returncode}:{output}")
    return result


def _tail(logPath: Optional[str], lines: int = 60) -> str:
    if not logPath or not os.path.exists(logPath):
        return ""
    with open(logPath, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    return f"\n--- last lines of {logPath} ---\n" + "\n".join(text.splitlines()[-lines:])


# -- system packages ------------------------------------------------------


def missingPackages(names: Iterable[str]) -> List[str]:
    """
    The Debian packages among C{names} that are not installed.
    """
    missing = []
    for name in names:
        result = run(["dpkg-query", "-W", "-f=${Status}", name], 30, check=False)
        if result.returncode != 0 or "install ok installed" not in result.stdout:
            missing.append(name)
    return missing


def ensurePackages(names: Sequence[str]) -> List[str]:
    """
    Install whichever of C{names} are missing, running C{apt-get update} only
    when a first attempt fails; returns what was installed.

    @raise Unavailable: apt cannot provide them.
    """
    if shutil.which("dpkg-query", path=SYSTEM_PATH) is None or shutil.which("apt-get", path=SYSTEM_PATH) is None:
        raise Unavailable("needs a Debian system with dpkg and apt-get")
    missing = missingPackages(names)
    if not missing:
        return []
    env = systemEnvironment({"DEBIAN_FRONTEND": "noninteractive"})
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + missing
    first = run(install, 900, env=env, check=False)
    if first.returncode != 0:
        run(["apt-get", "update", "-q"], 600, env=env, check=False)
        second = run(install, 900, env=env, check=False)
        if second.returncode != 0:
            tail = "\n".join(second.stdout.splitlines()[-5:])
            raise Unavailable(f"cannot install {' '.join(missing)} with apt-get:\n{tail}")
    still = missingPackages(missing)
    if still:
        raise Unavailable(f"apt-get did not install {' '.join(still)}")
    return missing


def packageStatus(name: str) -> str:
    """
    dpkg's status of C{name} (e.g. C{install ok installed}, C{deinstall ok
    config-files}), or C{""} when dpkg has no trace of it.
    """
    result = run(["dpkg-query", "-W", "-f=${Status}", name], 30, check=False)
    status = result.stdout.strip() if result.returncode == 0 else ""
    return "" if status.endswith("not-installed") else status


# -- building ---------------------------------------------------------------


def copyWorkTree(repo: str, dest: str) -> int:
    """
    Copy the files git would commit (tracked and untracked, minus ignored)
    from C{repo} to C{dest}, so the build never writes into the source tree
    and never sees .venv, _trial_temp or old build products. Returns the
    number of files copied.
    """
    listing = subprocess.run(
        ["git", "-C", repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
    )
    if listing.returncode != 0:
        raise CommandFailed("git ls-files failed: " + listing.stderr.decode("utf-8", "replace"))
    count = 0
    for name in sorted(set(listing.stdout.decode("utf-8").split("\0"))):
        if not name:
            continue
        source = os.path.join(repo, name)
        if not os.path.lexists(source) or os.path.isdir(source) and not os.path.islink(source):
            continue  # deleted in the work tree but still in the index, or a submodule
        target = os.path.join(dest, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
        count += 1
    return count


def buildPackage(sourceDir: str, logPath: str, timeout: float) -> Tuple[str, float]:
    """
    C{dpkg-buildpackage -us -uc -b} in C{sourceDir}; returns the path of the
    .deb (written next to C{sourceDir}) and the seconds the build took.
    """
    env = systemEnvironment()
    started = time.monotonic()
    run(["dpkg-buildpackage", "-us", "-uc", "-b"], timeout, cwd=sourceDir, env=env, logPath=logPath)
    seconds = time.monotonic() - started
    parent = os.path.dirname(os.path.abspath(sourceDir))
    debs = [name for name in os.listdir(parent) if re.match(r"^bwcd_[^_]+_[a-z0-9]+\.deb$", name)]
    if len(debs) != 1:
        raise CommandFailed(f"expected one bwcd_<version>_<arch>.deb in {parent}, found {debs}")
    return os.path.join(parent, debs[0]), seconds


# -- the systemd unit -------------------------------------------------------


@attrs.frozen
class Unit:
    """
    A parsed systemd unit file: for each section, its (key, value) pairs in order.
    """

    sections: Dict[str, Tuple[Tuple[str, str], ...]]

    def values(self, section: str, key: str) -> List[str]:
        return [v for k, v in self.sections.get(section, ()) if k == key]

    def value(self, section: str, key: str) -> Optional[str]:
        """
        The setting in force: the last assignment, as systemd reads it.
        """
        found = self.values(section, key)
        return found[-1] if found else None


def parseUnit(text: str) -> Unit:
    """
    Read a unit file: sections, repeated keys, comments and backslash
    continuation lines, per systemd.syntax(7).
    """
    sections: Dict[str, List[Tuple[str, str]]] = {}
    current: Optional[str] = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        if current is None or "=" not in line:
            raise ValueError(f"not a unit file line: {raw!r}")
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return Unit({name: tuple(pairs) for name, pairs in sections.items()})


def commandLine(value: str) -> List[str]:
    """
    The argv of an C{Exec*=} setting. Special prefixes (C{-@:+!}) are refused:
    the test runs the command exactly and knows no way to honour them.
    """
    argv = shlex.split(value)
    if not argv or argv[0][:1] in "-@:+!" or not os.path.isabs(argv[0]):
        raise ValueError(f"unsupported command line {value!r}")
    return argv


# -- processes ----------------------------------------------------------------


class Daemon:
    """
    The daemon started the way systemd starts the unit's C{ExecStart}: as its
    C{User=}/C{Group=} with that user's groups, in C{WorkingDirectory=}, with
    C{UMask=}, C{Environment=} and systemd's own variables, stdin from
    /dev/null and output to a log (systemd's journal stands in).
    """

    def __init__(self, unit: Unit, logPath: str) -> None:
        self.unit = unit
        self.logPath = logPath
        self.process: Optional[subprocess.Popen] = None
        self.argv = commandLine(unit.value("Service", "ExecStart") or "")

    def environment(self) -> Dict[str, str]:
        user = pwd.getpwnam(self.unit.value("Service", "User") or "root")
        env = {
            "PATH": SYSTEM_PATH,
            "LANG": "C.UTF-8",
            "HOME": user.pw_dir,
            "USER": user.pw_name,
            "LOGNAME": user.pw_name,
            "SHELL": user.pw_shell,
            "INVOCATION_ID": "0" * 32,
        }
        for assignment in self.unit.values("Service", "Environment"):
            for item in shlex.split(assignment):
                name, _, value = item.partition("=")
                env[name] = value
        return env

    def start(self) -> None:
        service = "Service"
        user = pwd.getpwnam(self.unit.value(service, "User") or "root")
        group = grp.getgrnam(self.unit.value(service, "Group") or grp.getgrgid(user.pw_gid).gr_name)
        umask = int(self.unit.value(service, "UMask") or "0022", 8)
        log = open(self.logPath, "ab")
        try:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.unit.value(service, "WorkingDirectory") or "/",
                env=self.environment(),
                user=user.pw_uid,
                group=group.gr_gid,
                extra_groups=os.getgrouplist(user.pw_name, group.gr_gid),
                umask=umask,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def waitReady(self, url: str, timeout: float) -> Dict[str, Any]:
        """
        Poll the health URL until it says ready; fail at once if the daemon exits.
        """
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                raise CommandFailed(f"bwcd exited with {self.process.returncode} while starting" + _tail(self.logPath))
            try:
                response = request("GET", url, timeout=2)
                if response.status == 200 and response.json().get("ready"):
                    return response.json()
                last = f"{response.status} {response.body[:200]!r}"
            except OSError as e:
                last = str(e)
            time.sleep(0.2)  # justified: this blocking harness starts the unit's command as systemd would and checks readiness the way an operator does, through /v1/health
        raise CommandFailed(f"bwcd not ready after {timeout} s ({last})" + _tail(self.logPath))

    def signal(self, signum: int) -> None:
        """
        What C{systemctl kill}/C{ExecReload=/bin/kill -HUP $MAINPID} do: a
        signal to the main process only.
        """
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float) -> int:
        """
        C{systemctl stop} under C{KillMode=mixed}: SIGTERM to the main process,
        then, after C{timeout}, SIGKILL to the whole group. Returns the exit status.
        """
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.process.wait(10)


#: exit statuses systemd counts as a clean stop (systemd.service(5),
#: SuccessExitStatus=): 0, or death by SIGHUP, SIGINT, SIGTERM or SIGPIPE.
#: twistd re-raises the signal that stopped it, so SIGTERM is the usual one.
CLEAN_EXIT = frozenset({0, -signal.SIGHUP, -signal.SIGINT, -signal.SIGTERM, -signal.SIGPIPE})


def makeCertificate(directory: str) -> Tuple[str, str]:
    """
    A self-signed certificate for 127.0.0.1 (and localhost), valid one day.
    """
    cert = os.path.join(directory, "bwcd.crt")
    key = os.path.join(directory, "bwcd.key")
    run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", key, "-out", cert,
        ],
        60,
    )
    return cert, key


def siteWithCertificate(siteText: str, cert: str, key: str) -> str:
    """
    The shipped site with its certificate paths pointed at the test's; the
    rest is used as shipped.
    """
    text, certs = re.subn(r"(?m)^(\s*ssl_certificate)\s+\S+;", rf"\1 {cert};", siteText)
    text, keys = re.subn(r"(?m)^(\s*ssl_certificate_key)\s+\S+;", rf"\1 {key};", text)
    if certs != 1 or keys != 1:
        raise ValueError(f"expected one ssl_certificate and one ssl_certificate_key, found {certs} and {keys}")
    return text


def nginxMainConfig(directory: str, sitePath: str) -> str:
    """
    A main nginx.conf of the test's own: pid, logs and temp files in
    C{directory}, the site included as the only server configuration (so
    Debian's default site never competes for port 80).
    """
    return f"""\
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log;
events {{ worker_connections 64; }}
http {{
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  access_log {directory}/access.log;
  client_body_temp_path {directory}/client_body;
  proxy_temp_path {directory}/proxy;
  fastcgi_temp_path {directory}/fastcgi;
  uwsgi_temp_path {directory}/uwsgi;
  scgi_temp_path {directory}/scgi;
  include {sitePath};
}}
"""


class Nginx:
    """
    nginx in the foreground with the test's main configuration.
    """

    def __init__(self, directory: str, sitePath: str) -> None:
        self.directory = directory
        self.config = os.path.join(directory, "nginx.conf")
        with open(self.config, "w") as f:
            f.write(nginxMainConfig(directory, sitePath))
        self.process: Optional[subprocess.Popen] = None

    def _argv(self, *extra: str) -> List[str]:
        return ["nginx", "-p", self.directory, "-c", self.config, "-e", os.path.join(self.directory, "error.log"), *extra]

    def check(self) -> None:
        run(self._argv("-t", "-q"), 30)

    def start(self, timeout: float = 15) -> None:
        log = open(os.path.join(self.directory, "nginx.out"), "ab")
        try:
            self.process = subprocess.Popen(
                self._argv("-g", "daemon off;"), env=systemEnvironment(), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CommandFailed(f"nginx exited with {self.process.returncode}" + _tail(os.path.join(self.directory, "error.log")))
            if portOpen(443):
                return
            time.sleep(0.1)  # justified: bounded retry of a refused connect until nginx listens (no readiness notice from nginx -g "daemon off;")
        raise CommandFailed("nginx did not listen on 443" + _tail(os.path.join(self.directory, "error.log")))

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def portOpen(port: int, host: str = "127.0.0.1") -> bool:
    """
    Whether something accepts connections on C{host:port}.
    """
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


# -- HTTP ---------------------------------------------------------------------


@attrs.frozen
class Response:
    status: int
    headers: Dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


def request(
    method: str,
    url: str,
    *,
    body: Optional[bytes] = None,
    headers: Optional[Mapping[str, str]] = None,
    cafile: Optional[str] = None,
    timeout: float = 15,
) -> Response:
    """
    One HTTP(S) request, no redirects followed; HTTPS trusts only C{cafile}.
    """
    scheme, _, rest = url.partition("://")
    hostport, slash, path = rest.partition("/")
    path = slash + path or "/"
    if scheme == "https":
        context = ssl.create_default_context(cafile=cafile)
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(hostport, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(hostport, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


# -- what is left behind -------------------------------------------------------

#: where an installed package puts things
SYSTEM_ROOTS = ("/etc", "/opt", "/usr", "/var", "/lib", "/run", "/srv")


def namedPaths(
    needle: str, roots: Iterable[str] = SYSTEM_ROOTS, uid: Optional[int] = None, exclude: Iterable[str] = ()
) -> set:
    """
    Every path under C{roots} (except under C{exclude}) whose name contains
    C{needle}, or (with C{uid}) that belongs to that user. Symlinks are not
    followed.
    """
    found = set()
    skip = {os.path.realpath(p) for p in exclude} | {"/proc", "/sys", "/dev"}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) not in skip]
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                if needle in name:
                    found.add(path)
                elif uid is not None:
                    try:
                        if os.lstat(path).st_uid == uid:
                            found.add(path)
                    except OSError:
                        pass
    return found


def processesOf(uid: int, marker: str) -> List[Tuple[int, str]]:
    """
    Running processes owned by C{uid} or whose command line contains C{marker}.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                status = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        state = re.search(r"^State:\s+(\S)", status, re.M)
        if state and state.group(1) == "Z":
            continue
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M)
        if (uids and uid in (int(uids.group(1)), int(uids.group(2)))) or marker in cmdline:
            found.append((int(entry), cmdline))
    return found
