"""The web space's login (password then one-time code), logout and activation, over real HTTPS."""

from __future__ import annotations

import pytest
from support.bridge_kit import INS, PASSWORD, make_ins
from support.web_kit import WebSpace, last_login_code, module_space

from mssante_base.patients.ins import Ins
from mssante_base.patients.states import PatientState

GENERIC = "Identifiant ou mot de passe incorrect."


space = module_space()


def test_pages_need_a_login(space: WebSpace) -> None:
    browser = space.browser()
    for path in ["/", "/conversations", "/documents", "/historique", "/nouveau", "/messages/1", "/documents/1",
                 "/enfants", "/supprimer-mon-espace"]:
        page = browser.get(path, follow=False)
        assert page.status == 303 and page.location == "/connexion", path
    page = browser.get("/")
    assert page.status == 200 and "Connexion à votre espace santé" in page.text
    for path in ["/activation", "/opposition"]:  # the public pages
        assert browser.get(path, follow=False).status == 200, path


def test_login_with_password_then_code(space: WebSpace) -> None:
    browser = space.browser()
    page = browser.login(INS["active"], PASSWORD, space.store)
    assert page.status == 200 and "Messagerie" in page.text and "Se déconnecter" in page.text
    actions = [entry.action for entry in space.store.history(INS["active"], limit=5)]
    assert actions[:2] == ["login", "login-code-sent"]


def test_ins_typed_with_spaces_is_accepted(space: WebSpace) -> None:
    browser = space.browser()
    browser.get("/connexion")
    spaced = " ".join(INS["active"][i:i + 3] for i in range(0, 15, 3))
    page = browser.post("/connexion", {"ins": spaced, "mot_de_passe": PASSWORD})
    assert page.status == 303 and page.location == "/connexion/code"


@pytest.mark.parametrize("ins, password", [
    (INS["active"], "wrong-password"),  # known INS, wrong password
    (INS["unknown"], PASSWORD),  # valid INS without a space
    ("123", PASSWORD),  # not an INS at all
    (INS["opposed"], PASSWORD),  # a space that is not active
    (INS["not_activated"], PASSWORD),
])
def test_every_refusal_says_the_same(space: WebSpace, ins: str, password: str) -> None:
    browser = space.browser()
    browser.get("/connexion")
    page = browser.post("/connexion", {"ins": ins, "mot_de_passe": password})
    assert page.status == 401
    assert GENERIC in page.text
    assert "session" not in page.text.lower()
    assert "__Host-mes" in browser.cookies and "ins" not in browser.cookies


def test_wrong_codes_then_the_challenge_is_spent(space: WebSpace) -> None:
    browser = space.browser()
    browser.get("/connexion")
    browser.post("/connexion", {"ins": INS["corsica"], "mot_de_passe": PASSWORD})
    good = last_login_code(space.store, INS["corsica"])
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    for left in (4, 3, 2, 1):
        page = browser.post("/connexion/code", {"code": wrong})
        assert page.status == 401 and f"Il vous reste {left} essai" in page.text
    page = browser.post("/connexion/code", {"code": wrong})
    assert page.status == 303 and page.location == "/connexion"
    page = browser.post("/connexion/code", {"code": good})  # the right code no longer helps
    assert page.status == 303 and page.location == "/connexion"
    assert browser.get("/").status == 200 and "Connexion à votre espace" in browser.get("/").text
    failed = [entry for entry in space.store.history(INS["corsica"], limit=20) if entry.action == "login-failed"]
    assert len(failed) == 5 and all(entry.detail["reason"] == "code" for entry in failed)


def test_code_page_without_password_step_goes_back(space: WebSpace) -> None:
    browser = space.browser()
    assert browser.get("/connexion/code", follow=False).location == "/connexion"


def test_logout_ends_the_session_and_its_cookie_is_refused(space: WebSpace) -> None:
    browser = space.logged_in()
    stolen = dict(browser.cookies)
    page = browser.post("/deconnexion")
    assert page.status == 303 and page.location == "/connexion"
    assert browser.get("/", follow=False).location == "/connexion"
    browser.cookies = stolen  # the cookie as it was before logging out
    assert browser.get("/", follow=False).location == "/connexion"
    assert any(entry.action == "logout" for entry in space.store.history(INS["active"], limit=5))


def test_session_ends_after_idle_timeout(space: WebSpace) -> None:
    browser = space.logged_in()
    space.clock.advance(space.settings.web_session_idle - 30)
    assert browser.get("/", follow=False).status == 200  # still active: this request renews it
    space.clock.advance(space.settings.web_session_idle - 30)
    assert browser.get("/", follow=False).status == 200
    space.clock.advance(space.settings.web_session_idle + 1)
    page = browser.get("/", follow=False)
    assert page.status == 303 and page.location == "/connexion"
    assert "Votre session a expiré" in browser.get("/connexion").text


def test_a_closed_space_loses_its_session(space: WebSpace) -> None:
    browser = space.logged_in("corsica")
    space.store.set_state(Ins(INS["corsica"]), PatientState.CLOSED, actor="operator:test")
    try:
        assert browser.get("/", follow=False).location == "/connexion"
    finally:
        space.store.set_state(Ins(INS["corsica"]), PatientState.ACTIVE, actor="operator:test")


def test_activation_then_login(space: WebSpace) -> None:
    from mes_bridge.store import NewPatient

    newcomer = Ins(INS["unknown"])
    _, code = space.store.create_patient(NewPatient(newcomer, PatientState.NOT_ACTIVATED, "Marc", "Neuf"),
                                         actor="operator:test")
    browser = space.browser()
    browser.get("/activation")
    fields = {"ins": newcomer.value, "code": code, "mot_de_passe": "un-mot-de-passe-long",
              "confirmation": "un-mot-de-passe-long", "email": "marc@example.org"}
    page = browser.post("/activation", {**fields, "code": "AAAAAAAAAAAA"})
    assert page.status == 400 and "code provisoire incorrect" in page.text
    page = browser.post("/activation", {**fields, "confirmation": "autre-chose-encore"})
    assert page.status == 400 and "différents" in page.text
    page = browser.post("/activation", {**fields, "mot_de_passe": "court", "confirmation": "court"})
    assert page.status == 400 and "12 caractères" in page.text
    page = browser.post("/activation", {**fields, "code": code.lower()[:6] + "-" + code.lower()[6:]})
    assert page.status == 303 and page.location == "/connexion"
    assert "Votre espace est activé" in browser.get("/connexion").text
    patient = space.store.patient(newcomer)
    assert patient is not None and patient.state == PatientState.ACTIVE and patient.email == "marc@example.org"
    page = browser.post("/activation", fields)  # a code works once
    assert page.status == 400
    browser.login(newcomer.value, "un-mot-de-passe-long", space.store)


def test_unknown_ins_activation_says_the_same(space: WebSpace) -> None:
    browser = space.browser()
    browser.get("/activation")
    page = browser.post("/activation", {"ins": "1990875999888" + "00", "code": "ABCDEFGHJKLM",
                                        "mot_de_passe": "un-mot-de-passe-long", "confirmation": "un-mot-de-passe-long"})
    assert page.status == 400 and "Matricule INS ou code provisoire incorrect" in page.text


def _new_space(space: WebSpace, first13: str, state: PatientState = PatientState.PENDING) -> tuple[str, str]:
    """A space created by the letter (pending, its provisional code); its INS and code."""
    from mes_bridge.store import NewPatient

    ins = Ins(make_ins(first13))
    _, code = space.store.create_patient(NewPatient(ins, state, "Anne", "Nouvelle"), actor="operator:test")
    return ins.value, code


def test_opposition_before_activation(space: WebSpace) -> None:
    ins, code = _new_space(space, "2850675222001")
    browser = space.browser()
    page = browser.get("/activation")
    assert 'href="/opposition"' in page.html
    page = browser.get("/opposition")
    assert page.status == 200 and "M'opposer à la création" in page.text and 'label for="code"' in page.html
    for typed_ins, typed_code in [(ins, "AAAAAAAAAAAA"), (INS["unknown"], code), ("123", code),
                                  (INS["active"], code)]:
        page = browser.post("/opposition", {"ins": typed_ins, "code": typed_code})
        assert page.status == 400 and "Matricule INS ou code provisoire incorrect, ou code expiré." in page.text
    assert space.store.patient(ins).state == PatientState.PENDING
    assert browser.post("/opposition", {"ins": ins, "code": code}, csrf=None).status == 403
    page = browser.post("/opposition", {"ins": ins, "code": code})
    assert page.status == 303 and page.location == "/opposition"
    assert "Votre opposition est enregistrée" in browser.get("/opposition").text
    assert space.store.patient(ins).state == PatientState.OPPOSED
    entry = next(entry for entry in space.store.history(ins, limit=5) if entry.action == "oppose")
    assert entry.actor == f"patient:{ins}"
    assert browser.post("/opposition", {"ins": ins, "code": code}).status == 400  # the code is spent


def test_deleting_ones_space(space: WebSpace) -> None:
    from mssante_base.passwords import password_hasher

    ins, code = _new_space(space, "1820675222002")
    space.store.activate(ins, code, password_hash=password_hasher().hash(PASSWORD), email=None,
                         actor=f"patient:{ins}")
    browser = space.browser()
    page = browser.login(ins, PASSWORD, space.store)
    assert 'href="/supprimer-mon-espace"' in page.html
    page = browser.get("/supprimer-mon-espace")
    assert page.status == 200 and 'type="checkbox"' in page.html and 'label for="confirmation"' in page.html
    page = browser.post("/supprimer-mon-espace", {"mot_de_passe": "wrong-password", "confirmation": "oui"})
    assert page.status == 400 and "Mot de passe incorrect" in page.text
    page = browser.post("/supprimer-mon-espace", {"mot_de_passe": PASSWORD})
    assert page.status == 400 and "Cochez la case" in page.text
    assert space.store.patient(ins).state == PatientState.ACTIVE
    kept = dict(browser.cookies)
    page = browser.post("/supprimer-mon-espace", {"mot_de_passe": PASSWORD, "confirmation": "oui"})
    assert page.status == 303 and page.location == "/connexion"
    assert "Votre espace santé a été supprimé" in browser.get("/connexion").text
    patient = space.store.patient(ins)
    assert patient is not None and patient.state == PatientState.DELETED
    entry = next(entry for entry in space.store.history(ins, limit=10) if entry.action == "delete")
    assert entry.actor == f"patient:{ins}"
    assert browser.get("/", follow=False).location == "/connexion"
    browser.cookies = kept  # the session's cookie, kept from before the deletion
    assert browser.get("/", follow=False).location == "/connexion"
    browser.get("/connexion")
    page = browser.post("/connexion", {"ins": ins, "mot_de_passe": PASSWORD})
    assert page.status == 401 and GENERIC in page.text
