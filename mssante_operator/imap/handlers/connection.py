"""Any-state and login commands: CAPABILITY, NOOP, LOGOUT, ID, ENABLE, NAMESPACE, LOGIN, AUTHENTICATE.

STARTTLS and IDLE need the connection itself and live in ``server.py``. Logins go through the
shared ``Authenticator`` (rate limits and delays included); a directory or credential store that
cannot answer gives ``NO [UNAVAILABLE]``, never "wrong password".
"""

from __future__ import annotations

import logging

from mssante_base.annuaire import AnnuaireUnavailable
from mssante_base.errors import TemporaryFailure

from ... import metrics
from ...auth import sasl
from ...auth.authenticator import AuthenticationFailed, Principal
from .. import wire
from ..commands import Authenticate, Capability, Enable, Id, Login, Logout, Namespace, Noop
from ..session import ANY_STATE, LOGGED_IN, SHARED_PREFIX, Reply, Session, State, bad, handles, no, ok
from .fetch import enable_condstore

log = logging.getLogger(__name__)
audit = logging.getLogger("mssante_operator.audit")

SERVER_ID = (("name", "mssante-operator"), ("vendor", "MSSanté operator"), ("support-url", None))


@handles(Capability, ANY_STATE)
async def capability(session: Session, command: Capability) -> Reply:
    await session.untagged("CAPABILITY " + " ".join(session.capabilities()))
    return ok("CAPABILITY completed")


@handles(Noop, ANY_STATE)
async def noop(session: Session, command: Noop) -> Reply:
    await session.refresh()
    return ok("NOOP completed")


@handles(Logout, ANY_STATE)
async def logout(session: Session, command: Logout) -> Reply:
    await session.untagged("BYE logging out")
    await session.unselect()
    session.state = State.LOGOUT
    return ok("LOGOUT completed")


@handles(Id, ANY_STATE)
async def identify(session: Session, command: Id) -> Reply:
    fields: list[object] = []
    for key, value in SERVER_ID:
        fields += [key, value]
    await session.untagged(b"ID " + wire.encode(fields))
    return ok("ID completed")


@handles(Enable, LOGGED_IN)
async def enable(session: Session, command: Enable) -> Reply:
    asked = dict.fromkeys(c.upper() for c in command.capabilities)  # each once, in the client's order
    newly = [c for c in asked if c == "CONDSTORE" and c not in session.enabled]
    await session.untagged("ENABLED" + "".join(f" {c}" for c in newly))
    if newly:
        await enable_condstore(session)
    return ok("ENABLE completed")


@handles(Namespace, LOGGED_IN)
async def namespace(session: Session, command: Namespace) -> Reply:
    shared = [[SHARED_PREFIX + "/", "/"]] if session.shared_addresses() else None
    parts = (wire.encode(part) for part in ([["", "/"]], None, shared))  # personal, other users, shared
    await session.untagged(b"NAMESPACE " + b" ".join(parts))
    return ok("NAMESPACE completed")


async def _logged_in(session: Session, principal: Principal) -> Reply:
    if not session.admit(principal):
        log.warning("imap login refused user=%s ip=%s: too many connections", principal.login, session.peer_ip)
        return no("too many connections for this account; close another mail client and try again", "LIMIT")
    for address in principal.addresses:
        await session.run(session.ctx.store.folders.ensure_account, address)
    session.state = State.AUTHENTICATED
    audit.info("imap login user=%s mechanism=%s ip=%s", principal.login, principal.mechanism, session.peer_ip)
    return ok(f"{principal.login} authenticated", "CAPABILITY " + " ".join(session.capabilities()))


async def _attempt(session: Session, login: object) -> Reply:
    """Await a login coroutine and turn its outcome into the tagged reply."""
    try:
        principal = await login  # type: ignore[misc]
    except AuthenticationFailed as exc:  # the reason is logged, never told: it would reveal which accounts exist
        metrics.LOGIN_FAILURES.labels("imap", exc.mechanism or "unknown").inc()
        return no(exc.client_message, "AUTHENTICATIONFAILED")
    except (AnnuaireUnavailable, TemporaryFailure) as exc:
        log.warning("login could not be checked now: %s", exc)
        return no("the directory cannot be reached now; try again later", "UNAVAILABLE")
    return await _logged_in(session, principal)


@handles(Login, (State.NOT_AUTHENTICATED,))
async def login(session: Session, command: Login) -> Reply:
    if not session.tls:
        return no("LOGIN is disabled until STARTTLS", "PRIVACYREQUIRED")
    return await _attempt(session, session.ctx.authenticator.password(
        command.username, command.password, session.peer_ip, mechanism="LOGIN"))


@handles(Authenticate, (State.NOT_AUTHENTICATED,))
async def authenticate(session: Session, command: Authenticate) -> Reply:
    if not session.tls:
        return no("authentication is disabled until STARTTLS", "PRIVACYREQUIRED")
    mechanism = command.mechanism.upper()
    if f"AUTH={mechanism}" not in session.capabilities():
        return no(f"{mechanism} is not offered here", "CANNOT")
    try:
        response = command.initial_response
        if response is None:
            response = await session.challenge(b"")
        authenticator = session.ctx.authenticator
        if mechanism == "PLAIN":
            plain = sasl.parse_plain(response)
            return await _attempt(session, authenticator.password(
                plain.authcid, plain.password, session.peer_ip, plain.authzid, mechanism="PLAIN"))
        if mechanism == "EXTERNAL":
            external = sasl.parse_external(response)
            assert session.peer_tls is not None
            return await _attempt(session, authenticator.certificate(session.peer_tls, session.peer_ip,
                                                                      external.authzid))
        bearer = sasl.parse_oauthbearer(response) if mechanism == "OAUTHBEARER" else sasl.parse_xoauth2(response)
        reply = await _attempt(session, authenticator.bearer(bearer.token, session.peer_ip, bearer.user,
                                                              mechanism=mechanism))
        if reply.status == "NO" and reply.code == "AUTHENTICATIONFAILED":
            error = sasl.oauthbearer_error() if mechanism == "OAUTHBEARER" else sasl.xoauth2_error()
            await session.challenge(error)  # RFC 7628 3.2.2: the client answers with a dummy ^A
        return reply
    except sasl.SaslCancelled:
        return bad("authentication cancelled")
    except sasl.SaslError as exc:
        return bad(f"malformed {mechanism} response: {exc}")
