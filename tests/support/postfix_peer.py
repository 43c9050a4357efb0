"""A stock Debian Postfix + OpenDKIM acting as a peer operator of the demo kit's trust space, for tests.

What another MSSanté operator would run: Postfix with the kit peer's IGC-Santé-like certificate, as
server (STARTTLS required, a client certificate of the trust CA required) and as client (presented
when it relays to us), OpenDKIM as its milter (signing what its own users send, verifying what
arrives), and local delivery into Maildirs. Nothing is tuned for us: Postfix's own reports (DSNs)
leave unsigned, as they do by default.

Everything lives in a private temporary folder: ``config_directory`` (main.cf, master.cf, TLS files),
``queue_directory``, ``data_directory``, the Maildirs, Postfix's log (``maillog_file``) and OpenDKIM's
configuration. Nothing listens on port 25: Postfix's "mta" service listens on a free 127.0.0.1 port
(:attr:`PostfixPeer.route`, the operator's ``[outbound]`` route for the peer's domain) and its
"inject" service on another (:meth:`PostfixPeer.inject`, the peer's users' submission: signed by
OpenDKIM). Mail for the operator's domain goes to ``operator_route`` (our MTA listener).

Usage::

    with PostfixPeer(home, manifest, "labo", operator_route="127.0.0.1:PORT") as peer:
        peer.inject(raw, sender, [recipient])          # a peer's user writes to us
        delivered = peer.wait_for_mail("resultats")    # bytes of each message in that Maildir

Tests using it are skipped when Postfix or OpenDKIM is not installed, except in CI (env CI=true),
where that is an error (``apt-get install postfix opendkim opendkim-tools``, see scripts/bootstrap.sh).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from mssante_operator.demo_kit import LOCALHOST, free_ports

from .postgres import in_ci
from .slapd import pdeathsig

POSTFIX = Path(os.environ.get("POSTFIX", "/usr/sbin/postfix"))
POSTFIX_MASTER = Path(os.environ.get("POSTFIX_MASTER", "/usr/lib/postfix/sbin/master"))
OPENDKIM = Path(os.environ.get("OPENDKIM", "/usr/sbin/opendkim"))
MAIL_OWNER = "postfix"
SETGID_GROUP = "postdrop"
_QUEUE_FOLDERS = ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private",
                  "saved", "trace")
# OpenDKIM refuses a configuration or a key under a folder others may write (/tmp): the peers live here.
BASE_DIR = Path(os.environ.get("POSTFIX_PEER_DIR", "/run/mssante-tests"))
START_TIMEOUT = 20.0
WAIT_TIMEOUT = 30.0

# The daemons a relaying Postfix needs (Debian's master.cf less what it does not use), none chrooted:
# the queue is in a temporary folder, not under /var/spool/postfix.
_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def require_postfix() -> None:
    """Skip the test (or fail it, in CI) when Postfix or OpenDKIM is missing."""
    missing = [str(p) for p in (POSTFIX, POSTFIX_MASTER, OPENDKIM) if not p.exists()]
    message = ""
    if missing:
        message = (f"Postfix + OpenDKIM not installed (missing {', '.join(missing)}; "
                   "apt-get install postfix opendkim opendkim-tools)")
    elif os.geteuid() != 0:
        message = "a Postfix peer needs root (its master process starts as root)"
    if message:
        if in_ci():
            pytest.fail(f"CI must test against a Postfix peer: {message}")
        pytest.skip(message)


class PostfixPeer:
    """A Postfix + OpenDKIM peer operator on 127.0.0.1; see the module docstring.

    ``name`` picks a kit peer ("labo"); ``operator_route`` is where mail for the operator's domain
    goes (``host:port`` of our MTA listener); ``mailboxes`` are the local parts it delivers to (each
    a Maildir), other recipients are refused.
    """

    def __init__(self, home: Path, manifest: dict[str, Any], name: str = "labo", *, operator_route: str,
                 mailboxes: tuple[str, ...] = ("resultats", "accueil")) -> None:
        require_postfix()
        entry = next(p for p in manifest["peers"] if p["name"] == name)
        self.domain: str = entry["domain"]
        self.dn: str = entry["dn"]
        self.hostname = f"smtp.{self.domain}"
        self.operator_domain: str = manifest["operator"]["domain"]
        self.mailboxes = mailboxes
        self.host = LOCALHOST
        self.port, self.inject_port, self.milter_port = free_ports(3)
        self._home = Path(home)
        self._manifest = manifest
        self._entry = entry
        self._operator_route = operator_route
        BASE_DIR.mkdir(mode=0o755, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="postfix-", dir=BASE_DIR))
        self.config_dir = self.workdir / "etc"
        self.mail_dir = self.workdir / "mail"
        self.log_file = self.workdir / "maillog"
        self._master: subprocess.Popen[bytes] | None = None
        self._opendkim: subprocess.Popen[bytes] | None = None

    @property
    def route(self) -> str:
        """The ``host:port`` to give the operator as its ``[outbound]`` route for :attr:`domain`."""
        return f"{self.host}:{self.port}"

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> PostfixPeer:
        """Write the configuration, start OpenDKIM and Postfix; return once both accept connections."""
        try:
            self._configure()
            self._opendkim = self._spawn([str(OPENDKIM), "-f", "-x", str(self.workdir / "opendkim.conf")],
                                         self.workdir / "opendkim.out")
            _wait_for_port(self.milter_port, self._opendkim, self.workdir / "opendkim.out")
            # master -d: in the foreground, a child of ours (killed with us); no postfix-script checks.
            self._master = self._spawn([str(POSTFIX_MASTER), "-c", str(self.config_dir), "-d"],
                                       self.workdir / "master.out")
            for port in (self.port, self.inject_port):
                _wait_for_port(port, self._master, self.workdir / "master.out", self.log_file)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop Postfix and OpenDKIM (SIGTERM, then SIGKILL) and remove the folder."""
        for process in (self._master, self._opendkim):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._master = self._opendkim = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostfixPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- use and observation -----------------------------------------------------------------

    def inject(self, raw: bytes, sender: str, recipients: list[str]) -> None:
        """A user of the peer sends ``raw`` (Postfix's "inject" service: OpenDKIM signs it)."""
        with smtplib.SMTP(self.host, self.inject_port, timeout=30) as client:
            client.ehlo("poste.local")
            refused = client.sendmail(sender, recipients, raw)
        assert not refused, refused

    def mailbox(self, local_part: str) -> list[bytes]:
        """The messages delivered to ``local_part@domain`` (its Maildir), oldest first."""
        new = self.mail_dir / local_part / "new"
        if not new.is_dir():
            return []
        return [path.read_bytes() for path in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns)]

    def wait_for_mail(self, local_part: str, count: int = 1, timeout: float = WAIT_TIMEOUT) -> list[bytes]:
        """The Maildir's messages once there are at least ``count``; AssertionError (with the log) after ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(found := self.mailbox(local_part)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} messages for {local_part}@{self.domain}, expected {count}; "
                                     f"Postfix log:\n{self.log_text()}")
            time.sleep(0.05)
        return found

    def wait_for_log(self, pattern: str, timeout: float = WAIT_TIMEOUT) -> str:
        """The first line of Postfix's log matching the regular expression ``pattern``, once it is there."""
        deadline = time.monotonic() + timeout
        wanted = re.compile(pattern)
        while True:
            for line in self.log_text().splitlines():
                if wanted.search(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never matched a line of Postfix's log:\n{self.log_text()}")
            time.sleep(0.05)

    def queue_id(self, received: str) -> str:
        """Postfix's queue id in the value of a ``Received`` header it wrote ("... with ESMTPS id 4Fq2...")."""
        match = re.search(rf"by {re.escape(self.hostname)} \(Postfix\) with \S+ id ([0-9A-Za-z]+)", received)
        assert match, received
        return match.group(1)

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- configuration -----------------------------------------------------------------------

    def _configure(self) -> None:
        owner = pwd.getpwnam(MAIL_OWNER)
        self.workdir.chmod(0o755)  # the postfix user walks into the queue and the Maildirs
        for folder in ("etc", "spool", "data", "mail", "opendkim"):
            (self.workdir / folder).mkdir()
        for folder in ("data", "mail"):
            os.chown(self.workdir / folder, owner.pw_uid, owner.pw_gid)
        home, manifest, entry = self._home, self._manifest, self._entry
        etc = self.config_dir
        shutil.copyfile(home / manifest["trust_ca"], etc / "trust-ca.pem")
        shutil.copyfile(home / entry["cert"], etc / "peer.pem")
        _copy_private(home / entry["key"], etc / "peer.key")
        _copy_private(home / entry["dkim_key"], self.workdir / "opendkim" / "signing.key")
        operator_host, operator_port = self._operator_route.rsplit(":", 1)
        next_hop = f"[{operator_host}]:{operator_port}"
        operator_name = f"mx.{self.operator_domain}"
        (etc / "vmailbox").write_text("".join(f"{local}@{self.domain} {local}/\n" for local in self.mailboxes))
        (etc / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.workdir / "spool"}
data_directory = {self.workdir / "data"}
mail_owner = {MAIL_OWNER}
maillog_file = {self.log_file}
maillog_file_prefixes = {self.workdir}
myhostname = {self.hostname}
mydomain = {self.domain}
myorigin = $mydomain
mydestination =
inet_interfaces = {LOCALHOST}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtp_dns_support_level = disabled
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
delay_warning_time = 0

virtual_mailbox_domains = {self.domain}
virtual_mailbox_base = {self.mail_dir}
virtual_mailbox_maps = texthash:{etc / "vmailbox"}
virtual_uid_maps = static:{owner.pw_uid}
virtual_gid_maps = static:{owner.pw_gid}
transport_maps = inline:{{ {{{self.operator_domain} = smtp:{next_hop}}} }}

smtpd_tls_cert_file = {etc / "peer.pem"}
smtpd_tls_key_file = {etc / "peer.key"}
smtpd_tls_CAfile = {etc / "trust-ca.pem"}
smtpd_tls_security_level = may
smtpd_tls_ask_ccert = yes
smtpd_tls_loglevel = 1
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination

smtp_tls_cert_file = {etc / "peer.pem"}
smtp_tls_key_file = {etc / "peer.key"}
smtp_tls_CAfile = {etc / "trust-ca.pem"}
smtp_tls_security_level = secure
smtp_tls_secure_cert_match = {operator_name}
smtp_tls_loglevel = 1

smtpd_milters = inet:{LOCALHOST}:{self.milter_port}
non_smtpd_milters = $smtpd_milters
milter_default_action = tempfail
""")
        (etc / "master.cf").write_text(
            # "mta": what the trust space connects to (TLS and a client certificate required, OpenDKIM verifies).
            f"{LOCALHOST}:{self.port} inet n - n - - smtpd\n"
            "  -o smtpd_tls_security_level=encrypt\n  -o smtpd_tls_req_ccert=yes\n"
            # "inject": the peer's own users; OpenDKIM signs what comes in with this daemon name.
            f"{LOCALHOST}:{self.inject_port} inet n - n - - smtpd\n"
            "  -o milter_macro_daemon_name=ORIGINATING\n"
            + _SERVICES
        )
        keys = self.workdir / "opendkim"
        (keys / "test-keys").write_text(
            f"{manifest['operator']['dkim_selector']}._domainkey.{self.operator_domain} "
            f"{manifest['operator']['dkim_public_txt']}\n"
        )
        (keys / "internal-hosts").write_text("192.0.2.1\n")  # none: the daemon name decides (MTA below)
        (self.workdir / "opendkim.conf").write_text(f"""\
Syslog no
Mode sv
Socket inet:{self.milter_port}@{LOCALHOST}
PidFile {keys / "opendkim.pid"}
Domain {self.domain}
Selector {entry["dkim_selector"]}
KeyFile {keys / "signing.key"}
Canonicalization relaxed/relaxed
MTA ORIGINATING
InternalHosts {keys / "internal-hosts"}
TestPublicKeys {keys / "test-keys"}
AuthservID {self.hostname}
""")
        _make_queue(self.workdir / "spool", owner)
        # Postfix waits until a configuration file is a second old (it may be being edited): make it so.
        past = time.time() - 60
        for path in etc.iterdir():
            os.utime(path, (past, past))

    def _spawn(self, argv: list[str], output: Path) -> subprocess.Popen[bytes]:
        with output.open("ab") as out:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=pdeathsig, start_new_session=True)


def _make_queue(queue: Path, owner: pwd.struct_passwd) -> None:
    """The queue folders with the owners and modes ``postfix check`` would give (it takes seconds)."""
    postdrop = grp.getgrnam(SETGID_GROUP).gr_gid
    for name in _QUEUE_FOLDERS:
        (queue / name).mkdir(mode=0o700)
        os.chown(queue / name, owner.pw_uid, 0)
    for name, mode in (("maildrop", 0o730), ("public", 0o710)):
        (queue / name).mkdir()
        (queue / name).chmod(mode)
        os.chown(queue / name, owner.pw_uid, postdrop)
    (queue / "pid").mkdir(mode=0o755)


def _copy_private(source: Path, target: Path) -> None:
    """Copy a private key, readable by root only (Postfix and OpenDKIM refuse looser keys)."""
    target.write_bytes(source.read_bytes())
    target.chmod(0o600)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], *logs: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            text = "\n".join(p.read_text(errors="replace") for p in logs if p.exists())
            raise RuntimeError(f"{process.args[0]} did not listen on {port}:\n{text or '(no output)'}")
        try:
            with socket.create_connection((LOCALHOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
