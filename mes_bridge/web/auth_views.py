"""Logging in (password, then a one-time code sent to the patient), logging out, and activation.

Every refusal of the password step says the same generic sentence whether the INS is unknown, not
active, or the password wrong, and costs the same argon2 verification (a dummy hash stands in for an
unknown INS), so neither the page nor its timing tells which INS have a space. Attempts are counted
per INS and per client address (429 beyond the limits).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp_session import Session, get_session
from argon2.exceptions import InvalidHashError, VerificationError

from mssante_base.passwords import password_hasher
from mssante_base.patients import codes
from mssante_base.patients.ins import InvalidIns, validate_ins
from mssante_base.patients.states import PatientState

from ..store import ActivationRefused, PatientNotFound
from .context import WEB, Web
from .pages import render
from .security import flash, reset_session, start_session

log = logging.getLogger(__name__)

GENERIC_REFUSAL = "Identifiant ou mot de passe incorrect."
TOO_MANY = "Trop de tentatives : pour protéger votre compte, réessayez dans quelques minutes."

_DUMMY_HASH = password_hasher().hash("mes-bridge: no such patient")


def _ip(request: web.Request) -> str:
    return request.remote or "?"


def _field(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def _normal_ins(text: str) -> str | None:
    try:
        return validate_ins(text.replace(" ", "").upper()).value
    except InvalidIns:
        return None


def _password_ok(password_hash: str | None, password: str) -> bool:
    """argon2 verification; an unknown patient costs the same (dummy hash) and never matches."""
    try:
        return password_hasher().verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def _too_many(request: web.Request, context: Web, kind: str, ins: str | None, template: str,
                    values: dict[str, Any]) -> web.Response | None:
    wait = context.limits.hit(kind, ins=ins, ip=_ip(request))
    if wait is None:
        return None
    log.warning("web rate limit kind=%s", kind)
    response = await render(request, template, {**values, "error": TOO_MANY}, status=429)
    response.headers["Retry-After"] = str(wait)
    return response


async def login_form(request: web.Request) -> web.Response:
    return await render(request, "login.html", {"ins": ""})


async def login(request: web.Request) -> web.StreamResponse:
    context = request.app[WEB]
    form = await request.post()
    typed_ins, password = _field(form, "ins"), form.get("mot_de_passe", "")
    ins = _normal_ins(typed_ins)
    values = {"ins": typed_ins}
    refused = await _too_many(request, context, "login", ins or typed_ins[:20], "login.html", values)
    if refused is not None:
        return refused
    patient = await context.call(context.store.patient, ins) if ins else None
    good = await context.call(_password_ok, patient.password_hash if patient else None,
                              password if isinstance(password, str) else "")
    if patient is None or not good or patient.state != PatientState.ACTIVE:
        if patient is not None:
            await context.call(context.store.audit_event, patient.ins, "login-failed", actor=f"patient:{patient.ins}",
                               detail={"ip": _ip(request), "reason": "password"})
        return await render(request, "login.html", {**values, "error": GENERIC_REFUSAL}, status=401)
    challenge = await context.call(context.store.start_login, patient.ins, code=codes.new_login_code(),
                                   ttl_seconds=context.options.code_ttl, ip=_ip(request))
    session = await get_session(request)
    session["challenge"] = challenge
    raise web.HTTPSeeOther("/connexion/code")


async def code_form(request: web.Request) -> web.StreamResponse:
    session = await get_session(request)
    if "challenge" not in session:
        raise web.HTTPSeeOther("/connexion")
    return await render(request, "code.html")


def _restart(session: Session, text: str) -> web.HTTPSeeOther:
    session.pop("challenge", None)
    flash(session, text, "error")
    return web.HTTPSeeOther("/connexion")


async def code(request: web.Request) -> web.StreamResponse:
    context = request.app[WEB]
    session = await get_session(request)
    challenge_id = session.get("challenge")
    if not isinstance(challenge_id, str):
        raise web.HTTPSeeOther("/connexion")
    store = context.store
    challenge = await context.call(store.login_challenge, challenge_id)
    if challenge is None or challenge.attempts >= context.options.code_tries:  # (the store drops expired ones)
        raise _restart(session, "Ce code n'est plus valable : reconnectez-vous pour en recevoir un nouveau.")
    refused = await _too_many(request, context, "code", challenge.ins, "code.html", {})
    if refused is not None:
        return refused
    typed = "".join(_field(await request.post(), "code").split())
    if not await context.call(codes.verify_code, challenge.code_hash, typed):
        attempts = await context.call(store.login_attempt_failed, challenge_id)
        await context.call(store.audit_event, challenge.ins, "login-failed", actor=f"patient:{challenge.ins}",
                           detail={"ip": _ip(request), "reason": "code"})
        left = context.options.code_tries - attempts
        if left <= 0:
            await context.call(store.drop_login, challenge_id)
            raise _restart(session, "Trop de codes incorrects : reconnectez-vous pour en recevoir un nouveau.")
        error = f"Code incorrect. Il vous reste {left} essai{'s' if left > 1 else ''}."
        return await render(request, "code.html", {"error": error}, status=401)
    await context.call(store.finish_login, challenge_id, ip=_ip(request))
    start_session(session, challenge.ins, context.options.clock())
    log.info("web login")
    raise web.HTTPSeeOther("/")


async def logout(request: web.Request) -> web.StreamResponse:
    context = request.app[WEB]
    session = await get_session(request)
    ins, sid = session.get("ins"), session.get("sid")
    if isinstance(sid, str):
        context.revoke(sid)
    if isinstance(ins, str):
        await context.call(context.store.audit_event, ins, "logout", actor=f"patient:{ins}", detail={})
    reset_session(session)
    flash(session, "Vous êtes déconnecté(e).")
    raise web.HTTPSeeOther("/connexion")


async def activation_form(request: web.Request) -> web.Response:
    return await render(request, "activation.html", {"ins": "", "email": ""})


async def activation(request: web.Request) -> web.StreamResponse:
    context = request.app[WEB]
    form = await request.post()
    typed_ins, email = _field(form, "ins"), _field(form, "email")
    password, confirmation = form.get("mot_de_passe", ""), form.get("confirmation", "")
    values = {"ins": typed_ins, "email": email}
    ins = _normal_ins(typed_ins)
    refused = await _too_many(request, context, "activation", ins or typed_ins[:20], "activation.html", values)
    if refused is not None:
        return refused
    problem = None
    if not isinstance(password, str) or len(password) < codes.MIN_PASSWORD:
        problem = f"Choisissez un mot de passe d'au moins {codes.MIN_PASSWORD} caractères."
    elif password != confirmation:
        problem = "Les deux mots de passe saisis sont différents."
    elif email and ("@" not in email or len(email) > 254 or any(c.isspace() for c in email)):
        problem = "L'adresse e-mail de notification n'est pas valide."
    if problem is None:
        password_hash = await context.call(password_hasher().hash, password)
        try:
            if ins is None:
                raise ActivationRefused("not an INS")
            await context.call(context.store.activate, ins, _field(form, "code"), password_hash=password_hash,
                               email=email or None, actor=f"patient:{ins}")
        except (ActivationRefused, PatientNotFound):
            problem = "Matricule INS ou code provisoire incorrect, ou code expiré."
    if problem is not None:
        return await render(request, "activation.html", {**values, "error": problem}, status=400)
    session = await get_session(request)
    flash(session, "Votre espace est activé : connectez-vous avec votre mot de passe.", "success")
    raise web.HTTPSeeOther("/connexion")
