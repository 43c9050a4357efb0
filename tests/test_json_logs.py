"""[logging] format = "json": one JSON object per line, with the fields of today's key=value lines, from the
operator's supervisor, its workers and mes_bridge alike; client text stays escaped."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from support.harness import (
    DOCTOR,
    connect_process,
    lab_report,
    make_kit,
    peer,
    serve_process,
    signed,
    wait_for_log,
)

from mssante_base.errors import ConfigError
from mssante_base.logs import JsonFormatter, use_log_format
from mssante_base.settings import load_logging_settings
from mssante_operator.config import load_settings


def _record(msg: str, *args: object, level: int = logging.INFO, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("mssante_operator.smtp.mta", level, __file__, 1, msg, args, exc_info)  # type: ignore[arg-type]


def _format(msg: str, *args: object, **kwargs: object) -> dict:
    line = JsonFormatter().format(_record(msg, *args, **kwargs))
    assert "\n" not in line and line.isascii()
    return json.loads(line)


def test_key_value_pairs_become_fields() -> None:
    entry = _format("accepted id=%s peer_dn=%r rcpts=%d stored=%d size=%d", "4f2a",
                    "CN=smtp.labo.fr,O=LABO 'X',C=FR", 2, 2, 2048)
    assert entry["level"] == "INFO" and entry["logger"] == "mssante_operator.smtp.mta"
    assert entry["time"].endswith("+00:00") and "T" in entry["time"]
    assert entry["message"] == "accepted"
    assert entry["id"] == "4f2a" and entry["peer_dn"] == "CN=smtp.labo.fr,O=LABO 'X',C=FR"
    assert (entry["rcpts"], entry["stored"], entry["size"]) == ("2", "2", "2048")  # one type per key: strings


def test_unparseable_parts_stay_in_the_message() -> None:
    entry = _format("outbox item=%d kind=%s not sent (%s)", 7, "receipt", "4.4.1")
    assert entry["message"] == "outbox not sent (4.4.1)"
    assert (entry["item"], entry["kind"]) == ("7", "receipt")
    entry = _format("operator %s ready", "hopital-demo.mssante.fr")
    assert entry["message"] == "operator hopital-demo.mssante.fr ready"
    entry = _format("queue id=00123 level=x message=y id=2 reply=%r,", "550 5.1.1 no")  # kept as written
    assert entry["id"] == "00123" and entry["level"] == "INFO"
    assert entry["message"] == "queue level=x message=y id=2 reply='550 5.1.1 no',"


def test_control_bytes_stay_escaped() -> None:
    entry = _format("mail refused sender_domain=%s reply=%r note=%s", "a\x1b[31mb", "550 \x00\r\nX", "c\udc80d")
    assert entry["sender_domain"] == "a\\x1b[31mb"
    assert entry["reply"] == "550 \\x00\\x0d\\x0aX"
    assert entry["note"] == "c\\x80d"
    assert "\x1b" not in json.dumps(entry, ensure_ascii=False) and "\x00" not in json.dumps(entry, ensure_ascii=False)


def test_a_traceback_is_one_field_of_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        entry = _format("delivery failed id=%s", "q1", level=logging.ERROR, exc_info=sys.exc_info())
    assert entry["level"] == "ERROR" and entry["id"] == "q1"
    assert "RuntimeError: boom" in entry["exception"]


def test_the_format_is_validated(tmp_path: Path) -> None:
    make_kit(tmp_path, logging={"format": "yaml"})
    with pytest.raises(ConfigError, match=r"logging\.format"):
        load_settings(tmp_path)
    with pytest.raises(ConfigError, match=r"logging\.format"):  # as mes_bridge reads it
        load_logging_settings(tmp_path)


def test_use_log_format_switches_the_root_handlers() -> None:
    handler = logging.StreamHandler()
    root = logging.getLogger()
    before = {other: other.formatter for other in root.handlers}  # pytest's capturing handlers among them
    root.addHandler(handler)
    try:
        use_log_format("text")
        assert not isinstance(handler.formatter, JsonFormatter)
        use_log_format("json")
        assert isinstance(handler.formatter, JsonFormatter)
    finally:
        root.removeHandler(handler)
        for other, formatter in before.items():
            other.setFormatter(formatter)


def test_a_served_operator_logs_json_lines_for_a_delivery(tmp_path: Path) -> None:
    manifest = make_kit(tmp_path, logging={"format": "json"})
    labo = peer(manifest, "labo")
    with serve_process(tmp_path, manifest):
        wait_for_log(tmp_path / "serve.log", '"message": "bridge ready"')
        with connect_process(tmp_path, manifest, labo) as client:
            client.sendmail(labo["sender"], [DOCTOR], signed(tmp_path, labo, lab_report(labo["sender"], [DOCTOR])))
        wait_for_log(tmp_path / "serve.log", '"message": "accepted"')
    lines = (tmp_path / "serve.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line, from every process, is one object
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry)
    accepted = next(e for e in entries if e["message"] == "accepted")
    assert accepted["logger"] == "mssante_operator.smtp.mta" and accepted["level"] == "INFO"
    assert accepted["peer_dn"] == labo["dn"]
    assert (accepted["rcpts"], accepted["stored"], accepted["duplicates"]) == ("1", "1", "0")
    assert int(accepted["size"]) > 1000 and accepted["id"]
    loggers = {e["logger"] for e in entries}
    assert {"mssante_operator.workers", "mssante_operator.app", "mes_bridge.service"} <= loggers
    bridge = next(e for e in entries if e["message"] == "bridge ready")
    assert bridge["lmtp"] == f"127.0.0.1:{manifest['listeners']['bridge_lmtp']['port']}"
