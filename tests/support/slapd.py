"""A throwaway OpenLDAP server (slapd) on loopback, loaded with our schema, for tests.

`start_slapd(workdir)` builds a cn=config configuration with ``slapadd -n0`` (Debian's core, cosine
and inetorgperson LDIF schemas plus ``schema/mssante.ldif``, so every run proves the .ldif form
loads), an mdb database, TLS from the project's dev PKI, and starts slapd in the foreground as a
child process listening on ``ldap://`` (StartTLS) and ``ldaps://`` on free 127.0.0.1 ports. It then
adds the suffix entry, a read-only service account and ``ou=mailboxes``.

Tests that need it are skipped when slapd is not installed, except in CI (env CI=true), where that
is an error. Use the function-scoped fixture ``slapd_server`` with
``from support.slapd import slapd_server  # noqa: F401``; ruff then reports F811 on every test parameter
named ``slapd_server``, which ``from support.slapd import slapd_server as slapd_server_fixture  # noqa: F401``
avoids (the fixture keeps its name whatever the module calls it).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ldap3
import pytest

from mssante_operator.trust_space import dev_pki

SLAPD = Path(os.environ.get("SLAPD", "/usr/sbin/slapd"))
SLAPADD = Path(os.environ.get("SLAPADD", "/usr/sbin/slapadd"))
SYSTEM_SCHEMA_DIR = Path(os.environ.get("LDAP_SCHEMA_DIR", "/etc/ldap/schema"))
MODULE_DIRS = ("/usr/lib/ldap", "/usr/lib64/openldap", "/usr/lib/openldap", "/usr/libexec/openldap")
PROJECT_SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schema"
# Ubuntu confines /usr/sbin/slapd with AppArmor (no access to /tmp); a copy elsewhere is unconfined.
APPARMOR_PROFILE = Path("/etc/apparmor.d/usr.sbin.slapd")

SUFFIX = "dc=mssante,dc=test"
BASE_DN = f"ou=mailboxes,{SUFFIX}"
ADMIN_DN = f"cn=admin,{SUFFIX}"
READER_DN = f"cn=mssante-operator,{SUFFIX}"
GNUTLS_PRIORITY = "NORMAL:-VERS-TLS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

# Debian's schemas then ours, in dependency order.
SCHEMAS = (
    SYSTEM_SCHEMA_DIR / "core.ldif",
    SYSTEM_SCHEMA_DIR / "cosine.ldif",
    SYSTEM_SCHEMA_DIR / "inetorgperson.ldif",
    PROJECT_SCHEMA_DIR / "mssante.ldif",
)
INDEXES = (
    "objectClass eq",
    "mail eq",
    "mssanteAddress eq",
    "mssanteIdNatPs eq",
    "mssanteIdNatStruct eq",
    "mssanteDelegate eq",
    "mssanteOrigin eq",
    "displayName eq",
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_slapd() -> None:
    """Skip the test (or fail it, in CI) when slapd, slapadd or the system schemas are missing."""
    missing = [str(p) for p in (SLAPD, SLAPADD, *SCHEMAS[:3]) if not p.exists()]
    if missing:
        message = f"OpenLDAP not installed (missing {', '.join(missing)}; apt-get install slapd ldap-utils)"
        if in_ci():
            pytest.fail(f"CI must test against slapd: {message}")
        pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ssha(password: str) -> str:
    """An OpenLDAP ``{SSHA}`` hash (salted SHA-1): what slappasswd writes by default."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


@functools.cache
def _tls_material() -> tuple[dev_pki.Authority, dev_pki.Issued]:
    """One CA and one server certificate per test process: RSA key generation is the slow part."""
    ca = dev_pki.make_ca("AC TEST ANNUAIRE", "MSSANTE TEST")
    server = dev_pki.issue(
        ca, cn="localhost", ou="ANNUAIRE", org="MSSANTE TEST", st="Paris (75)",
        dns_names=["localhost"], ip_addresses=["127.0.0.1"], client=False,
    )  # fmt: skip
    return ca, server


def _module_dir() -> str | None:
    """Where back_mdb is, when it is a loadable module (Debian) rather than built in."""
    for directory in MODULE_DIRS:
        if any(Path(directory).glob("back_mdb*.so")):
            return directory
    return None


@functools.cache
def _uses_gnutls() -> bool:
    """Whether slapd is linked with GnuTLS (Debian, Ubuntu) rather than OpenSSL."""
    result = subprocess.run(["ldd", str(SLAPD)], capture_output=True, text=True, timeout=30, check=False)
    return "libgnutls" in result.stdout


def pdeathsig() -> None:
    """In the child: get SIGTERM if the test process dies, so that no slapd outlives a killed run.

    Linux sends it when the *thread* that forked exits: start slapd from a long-lived thread.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Slapd:
    """A running (or stopped) slapd; see the module docstring."""

    url: str
    ldaps_url: str
    suffix: str
    base_dn: str
    admin_dn: str
    admin_password: str
    reader_dn: str
    reader_password: str
    ca_file: Path
    workdir: Path
    log_file: Path
    _binary: Path = field(repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def ldaps_port(self) -> int:
        return int(self.ldaps_url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start slapd (again) on the same ports, configuration and data; wait until it answers."""
        if self.running:
            return
        listeners = f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.ldaps_port}/"
        with self.log_file.open("ab") as log:
            # -d keeps slapd in the foreground (a child we can signal and wait for). Level "none"
            # prints only messages logged at every level (start banner, fatal errors such as
            # "bind(6) failed errno=98 (Address already in use)"); level 0 would print nothing.
            self._process = subprocess.Popen(
                [str(self._binary), "-h", listeners, "-F", str(self.workdir / "slapd.d"), "-d", "none"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=pdeathsig,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        pending = [self.port, self.ldaps_port]
        while pending:
            if self._process.poll() is not None:
                raise SlapdStartError(self._process.returncode, self.log_text())
            if time.monotonic() > deadline:
                self.stop()
                raise SlapdStartError(None, self.log_text())
            try:
                with socket.create_connection(("127.0.0.1", pending[0]), timeout=0.5):
                    pending.pop(0)
            except OSError:
                time.sleep(0.01)

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after STOP_TIMEOUT); a no-op if already stopped."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGCONT)  # a paused slapd only acts on SIGTERM once continued
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts TCP connections, but nothing ever answers.

        A signal takes effect when each of slapd's threads is next scheduled, which on a busy machine
        is after ``send_signal`` returns: wait until every thread is seen stopped."""
        if self.running:
            self._process.send_signal(signal.SIGSTOP)
            self._wait_for_threads(stopped=True)

    def resume(self) -> None:
        """SIGCONT after `pause`, returning once every thread runs again."""
        if self.running:
            self._process.send_signal(signal.SIGCONT)
            self._wait_for_threads(stopped=False)

    def _wait_for_threads(self, *, stopped: bool, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while _threads_stopped(self._process.pid) != stopped:
            if time.monotonic() > deadline:
                raise TimeoutError(f"slapd threads not {'stopped' if stopped else 'running'} after {timeout} s")
            time.sleep(0.005)

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace").strip()
        except FileNotFoundError:
            return ""

    def connection(self, dn: str | None = None, password: str | None = None, **kwargs: object) -> ldap3.Connection:
        """A bound plain-LDAP connection (default: as the reader); for tests that just need data."""
        server = ldap3.Server(self.url, get_info=ldap3.NONE, connect_timeout=5)
        dn = dn or self.reader_dn
        if password is None:
            password = self.admin_password if dn == self.admin_dn else self.reader_password
        return ldap3.Connection(server, dn, password, auto_bind=True, raise_exceptions=True, **kwargs)


def _threads_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is in the stopped state (T) in /proc."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(FileNotFoundError):  # a thread that just exited
            states.append(stat.read_text().rpartition(")")[2].split()[0])
    return bool(states) and all(state in ("T", "t") for state in states)


class SlapdStartError(RuntimeError):
    def __init__(self, returncode: int | None, log: str) -> None:
        status = "did not answer in time" if returncode is None else f"exited with status {returncode}"
        super().__init__(f"slapd {status}:\n{log or '(no output)'}")
        self.log = log


def _config_ldif(workdir: Path, admin_password: str) -> str:
    tls_dir = workdir / "tls"
    module_dir = _module_dir()
    module = (
        f"""
dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {module_dir}
olcModuleLoad: back_mdb
"""
        if module_dir
        else ""
    )
    # olcTLSProtocolMin is "ignored with GnuTLS" (slapd-config(5)), and Debian links slapd with
    # GnuTLS: there the floor of TLS 1.2 must be a GnuTLS priority string.
    cipher_suite = f"olcTLSCipherSuite: {GNUTLS_PRIORITY}\n" if _uses_gnutls() else ""
    includes = "\n".join(f"include: file://{path}" for path in SCHEMAS)
    indexes = "\n".join(f"olcDbIndex: {index}" for index in INDEXES)
    return f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {workdir}/slapd.pid
olcArgsFile: {workdir}/slapd.args
olcLogLevel: none
olcToolThreads: 1
olcDisallows: bind_anon
olcRequires: authc
olcTLSCACertificateFile: {tls_dir}/ca.pem
olcTLSCertificateFile: {tls_dir}/server.pem
olcTLSCertificateKeyFile: {tls_dir}/server.key
olcTLSProtocolMin: 3.3
olcTLSVerifyClient: never
{cipher_suite}{module}
dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{includes}

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend
olcAccess: {{0}}to dn.base="" by users read by * none
olcAccess: {{1}}to dn.base="cn=Subschema" by users read by * none
olcAccess: {{2}}to * by * none

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {SUFFIX}
olcDbDirectory: {workdir}/data
olcDbMaxSize: 1073741824
olcDbNoSync: TRUE
olcLastMod: TRUE
olcRootDN: {ADMIN_DN}
olcRootPW: {ssha(admin_password)}
{indexes}
olcAccess: {{0}}to attrs=userPassword by anonymous auth by * none
olcAccess: {{1}}to dn.subtree="{SUFFIX}" by dn.exact="{READER_DN}" read by * none
"""


def _initial_entries(reader_password: str) -> list[tuple[str, dict[str, object]]]:
    return [
        (SUFFIX, {"objectClass": ["dcObject", "organization"], "dc": "mssante", "o": "MSSante test"}),
        (
            READER_DN,
            {
                "objectClass": ["organizationalRole", "simpleSecurityObject"],
                "cn": "mssante-operator",
                "description": "The operator's read-only account",
                "userPassword": ssha(reader_password),
            },
        ),
        (BASE_DN, {"objectClass": "organizationalUnit", "ou": "mailboxes"}),
    ]


def _configure(workdir: Path, admin_password: str) -> Path:
    """Write TLS material and slapd.d; return the slapd binary to run."""
    ca, server = _tls_material()
    tls_dir = workdir / "tls"
    dev_pki.write_chain(tls_dir / "ca.pem", [ca.cert])
    dev_pki.write_chain(tls_dir / "server.pem", server.chain)
    dev_pki.write_key(tls_dir / "server.key", server.key)
    (workdir / "data").mkdir(parents=True)
    (workdir / "slapd.d").mkdir()
    config = workdir / "config.ldif"
    config.write_text(_config_ldif(workdir, admin_password))
    result = subprocess.run(
        [str(SLAPADD), "-n0", "-F", str(workdir / "slapd.d"), "-l", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"slapadd -n0 failed ({result.returncode}):\n{result.stderr.strip()}")
    if APPARMOR_PROFILE.exists():
        binary = workdir / "bin" / "slapd"
        binary.parent.mkdir()
        shutil.copy2(SLAPD, binary)
        return binary
    return SLAPD


def start_slapd(workdir: Path) -> Slapd:
    """Configure and start a slapd in ``workdir`` (created; it must not hold a previous one)."""
    require_slapd()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    admin_password = base64.urlsafe_b64encode(os.urandom(12)).decode()
    reader_password = base64.urlsafe_b64encode(os.urandom(12)).decode()
    binary = _configure(workdir, admin_password)
    for attempt in range(3):
        port = ldaps_port = free_port()
        while ldaps_port == port:
            ldaps_port = free_port()
        server = Slapd(
            url=f"ldap://127.0.0.1:{port}",
            ldaps_url=f"ldaps://127.0.0.1:{ldaps_port}",
            suffix=SUFFIX,
            base_dn=BASE_DN,
            admin_dn=ADMIN_DN,
            admin_password=admin_password,
            reader_dn=READER_DN,
            reader_password=reader_password,
            ca_file=workdir / "tls" / "ca.pem",
            workdir=workdir,
            log_file=workdir / "slapd.log",
            _binary=binary,
        )
        try:
            server.start()
            break
        except SlapdStartError as error:
            # Another process may take a port between free_port() and slapd's bind(): try others.
            if "Address already in use" not in error.log or attempt == 2:
                raise
            server.log_file.unlink(missing_ok=True)
    try:
        with server.connection(server.admin_dn) as admin:
            for dn, attributes in _initial_entries(reader_password):
                admin.add(dn, attributes=attributes)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(name="slapd_server")  # the name lets a module import it under an alias (ruff F811)
def slapd_server(tmp_path: Path) -> Iterator[Slapd]:
    """A fresh slapd for one test, stopped at teardown (skipped outside CI if slapd is missing)."""
    server = start_slapd(tmp_path / "slapd")
    try:
        yield server
    finally:
        server.stop()
