"""The spaces' lifecycle as the running bridge applies it: `serve`'s job creates spaces by default at the
end of their (shortened) opt-out window, the registry and the LMTP intake answer each state, a deleted
space answers as a closed one, and the command line drives a space through its life."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.bridge_kit import (
    INS,
    LMTPS,
    RunningBridge,
    fresh_bridge,
    https_get,
    lmtp_transaction,
    make_bridge_home,
    make_ins,
    message,
    tls_for,
)

from mes_bridge.cli import main
from mes_bridge.store import NewPatient
from mssante_base.patients.ins import validate_ins
from mssante_base.patients.states import PatientState

DOCTOR = "dr.martin@hopital.operator.test"
LETTERED = validate_ins(make_ins("2850475123456"))


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBridge]:
    with fresh_bridge(tmp_path_factory, opt_out_window="0s", lifecycle_interval="0.2s") as running:
        yield running


def wait_for_state(bridge: RunningBridge, ins: str, state: PatientState, timeout: float = 60) -> None:
    """Until the row says ``state`` (the job's tick is an event we can only observe in the store)."""
    deadline = time.monotonic() + timeout
    while (record := bridge.service.store.patient(ins)) is None or record.state is not state:
        assert time.monotonic() < deadline, f"{ins} never became {state}"
        time.sleep(0.05)


def registry_state(bridge: RunningBridge, ins: str) -> str:
    return https_get(bridge.registry_port, f"/v1/patients/{ins}", tls_for(bridge, "operator"))[1]["state"]


def lmtp_reply(bridge: RunningBridge, ins: str) -> tuple[int, bytes]:
    address = f"{ins.lower()}@patient.mssante.fr"
    with LMTPS(bridge.lmtp_port, tls_for(bridge, "operator")) as client:
        client.ehlo()  # LHLO
        code, _ = client.docmd("MAIL", f"FROM:<{DOCTOR}>")
        assert code == 250
        reply = client.docmd("RCPT", f"TO:<{address}>")
        client.docmd("RSET")
        return reply


def test_serve_creates_spaces_by_default_when_their_window_ends(bridge: RunningBridge) -> None:
    store = bridge.service.store
    store.create_patient(NewPatient(LETTERED, PatientState.PENDING, email="l@example.org"), actor="operator:t")
    wait_for_state(bridge, LETTERED.value, PatientState.NOT_ACTIVATED)
    assert registry_state(bridge, LETTERED.value) == "not_activated"
    (welcome,) = store.messages(LETTERED)
    assert welcome.no_reply
    assert [n.kind for n in store.notifications(LETTERED.value)] == ["created"]
    with LMTPS(bridge.lmtp_port, tls_for(bridge, "operator")) as client:
        _, data = lmtp_transaction(client, DOCTOR, [f"{LETTERED.value.lower()}@patient.mssante.fr"],
                                   message("<after-window@operator.test>"))
    assert data[0][0] == 250  # created by default: professionals can write


def test_a_deleted_space_answers_as_a_closed_one(bridge: RunningBridge) -> None:
    closed_reply = lmtp_reply(bridge, INS["closed"])
    ins = validate_ins(INS["corsica"])
    bridge.service.store.delete_space(ins, actor="operator:t")
    assert registry_state(bridge, ins.value) == "closed"
    deleted_reply = lmtp_reply(bridge, ins.value)
    assert deleted_reply[0] == closed_reply[0] == 550
    assert deleted_reply[1].replace(ins.value.lower().encode(), b"X") == closed_reply[1].replace(
        INS["closed"].lower().encode(), b"X")


def run(home: Path, *args: str, input: str | None = None) -> tuple[int, list[dict], str]:
    result = CliRunner().invoke(main, [*args, "--home", str(home)], input=input)
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    return result.exit_code, lines, result.output


def test_the_command_line_through_a_space_s_life(tmp_path: Path) -> None:
    home = make_bridge_home(tmp_path / "home", opt_out_window="0s", archive_retention="0s")["home"]
    child = make_ins("2170675123456")
    young = (date.today() - timedelta(days=365 * 6)).isoformat()
    code, _, output = run(home, "patient", "create", child, "--representative", INS["active"])
    assert code == 2 and "birth date" in output  # a child's space needs a minor's birth date
    code, (created,), _ = run(home, "patient", "create", child, "--birth-date", young, "--representative",
                              INS["active"], "--by", "alice")
    assert created["state"] == "pending" and created["representatives"] == [INS["active"]]
    code, (tick,), _ = run(home, "lifecycle")
    assert code == 0 and tick["created_by_default"] == [child] and tick["purged"] == []
    assert run(home, "patient", "oppose", child, "--by", "alice")[1][0]["state"] == "opposed"
    assert run(home, "patient", "delete", child)[0] == 2  # --by is required: who recorded the request
    code, (deleted,), _ = run(home, "patient", "delete", child, "--by", "alice")
    assert code == 0 and deleted["state"] == "deleted"
    code, _, output = run(home, "inbox", child)
    assert code == 1 and "readable by no one" in output
    assert run(home, "documents", "ls", child)[0] == 1
    code, (purged,), _ = run(home, "purge", "--by", "alice")
    assert purged == {"purged": [child]}
    _, entries, _ = run(home, "audit", "ls", child)
    assert [e["action"] for e in entries] == ["patient-add", "representative-add", "created-by-default", "receive",
                                              "notify", "oppose", "notify", "delete", "purge"]  # notices: parent
    assert run(home, "audit", "verify")[1][0]["ok"]


def test_patients_file_seeds_a_child_with_its_code_and_representative(tmp_path: Path) -> None:
    from mes_bridge.service import open_store, seed_patients
    from mes_bridge.settings import load_bridge_settings
    from mssante_base.errors import ConfigError
    from mssante_base.patients.codes import hash_code

    kit = make_bridge_home(tmp_path / "home")
    home = kit["home"]
    settings = load_bridge_settings(home)
    child = make_ins("2160575123458")
    young = (date.today() - timedelta(days=365 * 9)).isoformat()
    patients_file = settings.path(settings.patients_file)
    seeded = json.loads(patients_file.read_text())
    seeded["patients"].insert(0, {"ins": child, "state": "pending", "birth_date": young,
                                  "activation_code_hash": hash_code("ABCDEFGHJKLM"),
                                  "representatives": [INS["active"]]})  # the parent comes after the child
    patients_file.write_text(json.dumps(seeded))
    store = open_store(settings)
    try:
        seed_patients(settings, store)
        assert store.represents(INS["active"], child) and store.patient(child).window_ends_at is not None
        store.activate_child(child, "ABCD-EFGH-JKLM", representative=INS["active"])
        assert store.patient(child).state is PatientState.ACTIVE
        seeded["patients"].append({"ins": make_ins("2170675123456"), "state": "pending",
                                   "representatives": [make_ins("1991275999888")]})
        patients_file.write_text(json.dumps(seeded))
        with pytest.raises(ConfigError, match="representative"):
            seed_patients(settings, store)
    finally:
        store.close()
