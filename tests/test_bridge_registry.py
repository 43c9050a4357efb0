"""The patient registry over real HTTPS with client certificates (trusted, untrusted, revoked, rogue, none)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.bridge_kit import INS, RunningBridge, fresh_bridge, https_get, tls_for


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBridge]:
    with fresh_bridge(tmp_path_factory) as running:
        yield running


def get(bridge: RunningBridge, path: str, who: str | None = "operator") -> tuple[int, dict]:
    return https_get(bridge.registry_port, path, tls_for(bridge, who))


def test_health(bridge: RunningBridge) -> None:
    assert get(bridge, "/v1/health") == (200, {"status": "ok"})


@pytest.mark.parametrize("name", ["active", "not_activated", "opposed", "closed"])
def test_known_patients_have_their_state(bridge: RunningBridge, name: str) -> None:
    assert get(bridge, f"/v1/patients/{INS[name]}") == (200, {"ins": INS[name], "state": name})


def test_unknown_patient_is_404_with_state_unknown(bridge: RunningBridge) -> None:
    assert get(bridge, f"/v1/patients/{INS['unknown']}") == (404, {"ins": INS["unknown"], "state": "unknown"})


def test_corsican_ins_is_canonicalised(bridge: RunningBridge) -> None:
    lower = INS["corsica"].lower()
    assert "2a" in lower
    assert get(bridge, f"/v1/patients/{lower}") == (200, {"ins": INS["corsica"], "state": "active"})


@pytest.mark.parametrize(("value", "why"), [
    ("12345", "15 characters"),
    ("18406751234564X", "digits"),
    (INS["active"][:-2] + "00", "key"),
])
def test_invalid_ins_is_400_naming_why(bridge: RunningBridge, value: str, why: str) -> None:
    status, body = get(bridge, f"/v1/patients/{value}")
    assert status == 400
    assert why in body["error"]


@pytest.mark.parametrize(("who", "why"), [("stranger", "not a trusted operator"), ("revoked", "revoked")])
def test_untrusted_or_revoked_operator_is_403(bridge: RunningBridge, who: str, why: str) -> None:
    for path in (f"/v1/patients/{INS['active']}", "/v1/health", "/v1/patients/nonsense"):
        status, body = get(bridge, path, who)
        assert status == 403
        assert why in body["error"]
        assert "state" not in body


@pytest.mark.parametrize("who", [None, "rogue"])
def test_no_certificate_or_another_ca_fails_the_handshake(bridge: RunningBridge, who: str | None) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get(bridge, "/v1/health", who)


def test_state_change_is_seen_at_once(bridge: RunningBridge, tmp_path: Path) -> None:
    from mssante_base.patients.ins import validate_ins
    from mssante_base.patients.states import PatientState

    ins = validate_ins(INS["not_activated"])
    bridge.service.store.set_state(ins, PatientState.ACTIVE, actor="test")
    try:
        assert get(bridge, f"/v1/patients/{ins}") == (200, {"ins": ins.value, "state": "active"})
    finally:
        bridge.service.store.set_state(ins, PatientState.NOT_ACTIVATED, actor="test")


def test_reloaded_crls_apply_to_the_next_request(bridge: RunningBridge) -> None:
    from cryptography import x509

    from mssante_operator.trust_space import dev_pki

    kit = bridge.kit
    crl_path = kit["home"] / "certs" / "trust-ca.crl.pem"
    original = crl_path.read_bytes()
    operator = x509.load_pem_x509_certificates(kit["parties"]["operator"].cert.read_bytes())[0]
    dev_pki.write_crl(crl_path, dev_pki.make_crl(kit["ca"], [*kit["revoked_serials"], operator.serial_number]))
    try:
        bridge.call(bridge.service.reload())
        status, body = get(bridge, "/v1/health")
        assert (status, "revoked" in body["error"]) == (403, True)
        crl_path.write_text("not a CRL")
        bridge.call(bridge.service.reload())  # refused: the lists in force stay
        assert get(bridge, "/v1/health")[0] == 403
    finally:
        crl_path.write_bytes(original)
        bridge.call(bridge.service.reload())
    assert get(bridge, "/v1/health") == (200, {"status": "ok"})
