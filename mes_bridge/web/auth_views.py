"""Logging in (password, then a one-time code sent to the patient), logging out, activation, opposition
to a space's creation (the person's or a child's, with its provisional code), and the deletion of one's
own space (password retyped and a box ticked).

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
from mssante_base.patients.ins import Ins, InvalidIns, validate_ins
from mssante_base.patients.states import PatientState

from ..store import ActivationRefused, PatientNotFound
from .context import WEB, Web
from .pages import acting_for_child, ins_of, render
from .security import flash, reset_session, start_session

log = logging.getLogger(__name__)

GENERIC_REFUSAL = "Identifiant ou mot de passe incorrect."
TOO_MANY = "Trop de tentatives : pour protéger votre compte, réessayez dans quelques minutes."
CODE_REFUSAL = "Matricule INS ou code provisoire incorrect, ou code expiré."  # the same for any INS
CODE_TRIES = "activation"  # one count for every form that checks a provisional code (activation, opposition)

_DUMMY_HASH = password_hasher().hash("mes-bridge: no such patient")


def _ip(request: web.Request) -> str:
    return request.remote or "?"


def form_field(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def normal_ins(text: str) -> str | None:
    try:
        return validate_ins(text.replace(" ", "").upper()).value
    except InvalidIns:
        return None


def password_ok(password_hash: str | None, password: str) -> bool:
    """argon2 verification; an unknown patient costs the same (dummy hash) and never matches."""
    try:
        return password_hasher().verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def too_many(request: web.Request, context: Web, kind: str, ins: str | None, template: str,
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
    typed_ins, password = form_field(form, "ins"), form.get("mot_de_passe", "")
    ins = normal_ins(typed_ins)
    values = {"ins": typed_ins}
    refused = await too_many(request, context, "login", ins or typed_ins[:20], "login.html", values)
    if refused is not None:
        return refused
    patient = await context.call(context.store.patient, ins) if ins else None
    good = await context.call(password_ok, patient.password_hash if patient else None,
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
    refused = await too_many(request, context, "code", challenge.ins, "code.html", {})
    if refused is not None:
        return refused
    typed = "".join(form_field(await request.post(), "code").split())
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


def _end_session(context: Web, session: Session) -> None:
    """Forget the session, and refuse its cookie from now on (a copy kept elsewhere no longer works)."""
    sid = session.get("sid")
    if isinstance(sid, str):
        context.revoke(sid)
    reset_session(session)


async def logout(request: web.Request) -> web.StreamResponse:
    context = request.app[WEB]
    session = await get_session(request)
    ins = session.get("ins")
    if isinstance(ins, str):
        await context.call(context.store.audit_event, ins, "logout", actor=f"patient:{ins}", detail={})
    _end_session(context, session)
    flash(session, "Vous êtes déconnecté(e).")
    raise web.HTTPSeeOther("/connexion")


async def activation_form(request: web.Request) -> web.Response:
    return await render(request, "activation.html", {"ins": "", "email": ""})


async def activation(request: web.Request) -> web.StreamResponse:
    context = request.app[WEB]
    form = await request.post()
    typed_ins, email = form_field(form, "ins"), form_field(form, "email")
    password, confirmation = form.get("mot_de_passe", ""), form.get("confirmation", "")
    values = {"ins": typed_ins, "email": email}
    ins = normal_ins(typed_ins)
    refused = await too_many(request, context, CODE_TRIES, ins or typed_ins[:20], "activation.html", values)
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
            await context.call(context.store.activate, ins, form_field(form, "code"), password_hash=password_hash,
                               email=email or None, actor=f"patient:{ins}")
        except (ActivationRefused, PatientNotFound):
            problem = CODE_REFUSAL
    if problem is not None:
        return await render(request, "activation.html", {**values, "error": problem}, status=400)
    session = await get_session(request)
    flash(session, "Votre espace est activé : connectez-vous avec votre mot de passe.", "success")
    raise web.HTTPSeeOther("/connexion")


async def opposition_form(request: web.Request) -> web.Response:
    return await render(request, "opposition.html", {"ins": ""})


async def opposition(request: web.Request) -> web.StreamResponse:
    """Opposition to a space's creation with its INS and provisional code (no login: the space may not
    exist yet); the same refusal whatever is wrong, counted like activation attempts."""
    context = request.app[WEB]
    form = await request.post()
    typed_ins = form_field(form, "ins")
    values = {"ins": typed_ins}
    ins = normal_ins(typed_ins)
    refused = await too_many(request, context, CODE_TRIES, ins or typed_ins[:20], "opposition.html", values)
    if refused is not None:
        return refused
    try:
        if ins is None:
            raise ActivationRefused("not an INS")
        await context.call(context.store.oppose_with_code, ins, form_field(form, "code"), actor=f"patient:{ins}")
    except (ActivationRefused, PatientNotFound):
        return await render(request, "opposition.html", {**values, "error": CODE_REFUSAL}, status=400)
    flash(await get_session(request), "Votre opposition est enregistrée : cet espace santé ne sera pas créé.",
          "success")
    raise web.HTTPSeeOther("/opposition")


NOT_FOR_A_CHILD = ("La suppression ne se demande que pour votre propre espace : revenez à votre espace pour "
                   "la demander.")


async def deletion_form(request: web.Request) -> web.Response:
    if acting_for_child(request):
        return await render(request, "deletion.html", {"refusal": NOT_FOR_A_CHILD}, status=403)
    return await render(request, "deletion.html")


async def deletion(request: web.Request) -> web.StreamResponse:
    """Delete one's own space: the password retyped and the box ticked; then the session ends."""
    if acting_for_child(request):
        return await render(request, "deletion.html", {"refusal": NOT_FOR_A_CHILD}, status=403)
    context, ins = request.app[WEB], ins_of(request)
    refused = await too_many(request, context, "login", ins, "deletion.html", {})
    if refused is not None:
        return refused
    form = await request.post()
    password = form.get("mot_de_passe", "")
    patient = await context.call(context.store.patient, ins)
    good = await context.call(password_ok, patient.password_hash if patient else None,
                              password if isinstance(password, str) else "")
    problem = None
    if not good:
        problem = "Mot de passe incorrect : votre espace n'a pas été supprimé."
    elif form.get("confirmation") != "oui":
        problem = "Cochez la case de confirmation : votre espace n'a pas été supprimé."
    if problem is not None:
        return await render(request, "deletion.html", {"error": problem}, status=400)
    await context.call(context.store.delete_space, Ins(ins), actor=f"patient:{ins}")
    session = await get_session(request)
    _end_session(context, session)
    log.info("web space deleted")
    flash(session, "Votre espace santé a été supprimé. Il n'est plus accessible et ne reçoit plus de messages.",
          "success")
    raise web.HTTPSeeOther("/connexion")
