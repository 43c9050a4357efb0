"""`mes-bridge patient …`, `audit …`, `notifications`, `documents …` against a real HOME and store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner
from support.bridge_kit import INS, make_bridge_home

from mes_bridge.cli import main
from mes_bridge.filing.categories import Category
from mes_bridge.service import open_store
from mes_bridge.settings import load_bridge_settings
from mes_bridge.store import MessageMeta, NewDocument
from mssante_base.patients.ins import validate_ins

NEW = INS["unknown"]


def run(home: Path, *args: str, input: str | None = None) -> tuple[int, list[dict]]:
    result = CliRunner().invoke(main, [*args, "--home", str(home)], input=input)
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    return result.exit_code, lines


def test_create_activate_oppose_close(tmp_path: Path) -> None:
    home = make_bridge_home(tmp_path / "home")["home"]
    code, (created,) = run(home, "patient", "create", NEW, "--given-name", "Zoé", "--birth-date", "1999-08-01",
                           "--sex", "F")
    assert code == 0 and created["state"] == "pending" and len(created["activation_code"]) == 12
    assert created["window_ends_at"] and created["representatives"] == []
    assert run(home, "patient", "create", NEW)[0] == 1
    assert run(home, "patient", "create", INS["unknown"][:14] + "0")[0] == 2  # a wrong key is a usage error
    code, _ = run(home, "patient", "activate", NEW, "--code", "AAAABBBBCCCC", "--password-stdin",
                  input="a-long-password-1\n")
    assert code == 1
    code, (fresh,) = run(home, "patient", "new-code", NEW)
    code, (active,) = run(home, "patient", "activate", NEW, "--code", fresh["activation_code"], "--password-stdin",
                          "--email", "zoe@example.org", input="a-long-password-1\n")
    assert code == 0 and active["state"] == "active"
    assert run(home, "patient", "new-code", NEW)[0] == 1  # active: no code any more
    assert run(home, "patient", "oppose", NEW)[0] == 1  # too late to oppose an active space: close it
    assert run(home, "patient", "close", NEW, "--by", "alice")[1][0]["state"] == "closed"
    code, (again,) = run(home, "patient", "new-code", NEW, "--by", "alice")  # the person changed their mind
    code, (reopened,) = run(home, "patient", "activate", NEW, "--code", again["activation_code"], "--password-stdin",
                            input="a-long-password-2\n")
    assert code == 0 and reopened["state"] == "active"
    _, entries = run(home, "audit", "ls", NEW)
    assert [e["action"] for e in entries] == ["patient-add", "activation-code", "activate", "receive", "close",
                                              "activation-code", "activate"]  # one welcome: the space opened once
    assert entries[4]["actor"] == "operator:alice" and entries[4]["detail"] == {"from": "active", "to": "closed"}


def test_audit_verify_release_and_notifications(tmp_path: Path) -> None:
    home = make_bridge_home(tmp_path / "home")["home"]
    settings = load_bridge_settings(home)
    store = open_store(settings)
    ins = validate_ins(INS["active"])
    try:
        run(home, "patients", "ls")  # seeds patients.json
        store.deliver(b"Subject: x\r\n\r\nx\r\n", [ins], MessageMeta("<m@x>", "dr@x.test", (ins.address,), "x",
                                                                    from_address="dr@x.test"), actor="CN=op",
                      documents={ins.value: [NewDocument(b"%PDF-1.4", "application/pdf", "Annonce", Category.CPT_REND,
                                                         hidden_from_patient=True)]})
    finally:
        store.close()
    code, (report,) = run(home, "audit", "verify")
    assert code == 0 and report["ok"] and report["entries"] > 5
    _, (document,) = run(home, "documents", "ls", ins.value)
    assert document["hidden_from_patient"] is True
    code, (released,) = run(home, "documents", "release", ins.value, str(document["id"]))
    assert code == 0 and released["hidden_from_patient"] is False
    assert run(home, "documents", "release", INS["corsica"], str(document["id"]))[0] == 1  # not that patient's
    _, notices = run(home, "notifications", "--ins", ins.value)
    assert [notice["kind"] for notice in notices][-2:] == ["message", "first-contact"]
    assert notices[-1]["email"] == "active@example.org"
    with sqlite3.connect(home / "bridge.db") as db:  # tampering around the triggers
        db.execute("DROP TRIGGER bridge_audit_no_update")
        db.execute("UPDATE bridge_audit SET actor = 'nobody' WHERE id = 3")
    code, (report,) = run(home, "audit", "verify")
    assert code == 1 and report["first_bad"] == 3 and not report["ok"]
