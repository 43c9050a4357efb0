"""Settings pieces both services read from HOME/config.toml: the file's name, durations, a strict section,
the SMTP listeners' limits, and error messages that name the file and the dotted key.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from mssante_base.errors import ConfigError

CONFIG_FILE = "config.toml"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400, None: 1}


def parse_duration(value: object) -> float:
    """Turn "90s", "5m", "4h", "5d", "6w", "10y" (365 days) or a number of seconds into seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration such as '30s', '5m', '4h' or '5d'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(f"{value!r} is not a duration such as '30s', '5m', '4h' or '5d'")


Duration = Annotated[float, BeforeValidator(parse_duration)]


class Section(BaseModel):
    """A table of config.toml: unknown keys are errors, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LimitsSettings(Section):
    """Limits of the SMTP listeners (MTA and submission), each counted per worker process."""

    max_message_size: int = Field(default=25 * 1024 * 1024, ge=1024)
    max_recipients: int = Field(default=100, ge=1)
    max_line_length: int = Field(default=998, ge=78)
    max_connections: int = Field(default=200, ge=1)
    max_connections_per_ip: int = Field(default=20, ge=1)
    idle_timeout: Duration = 300.0
    session_timeout: Duration = 1800.0
    # Directory harvesting (Postfix's smtpd_soft/hard_error_limit, smtpd_error_sleep_time): after
    # soft_error_limit refused recipients in a session each further refusal waits error_sleep; at
    # hard_error_limit the session ends with 421 4.7.0. Across sessions, a peer certificate (MTA) may
    # collect failed_recipients_per_certificate refused recipients within failed_recipients_window.
    soft_error_limit: int = Field(default=5, ge=0)
    hard_error_limit: int = Field(default=20, ge=1)
    error_sleep: Duration = Field(default=1.0, ge=0.0)
    failed_recipients_per_certificate: int = Field(default=100, ge=1)
    failed_recipients_window: Duration = Field(default=3600.0, gt=0.0)
    # Postfix's stress mode: once stress_threshold of max_connections are open, a session that has not
    # yet had a MAIL accepted is closed after stress_idle_timeout of silence, and when every slot is
    # taken the oldest such session gives its slot to the new connection.
    stress_threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    stress_idle_timeout: Duration = Field(default=10.0, gt=0.0)


class LoggingSettings(Section):
    """How ``serve`` writes its log lines (operator, workers, mes_bridge): "text" as ever, or "json", one
    object per line for a log collector (mssante_base.logs)."""

    format: Literal["text", "json"] = "text"


def format_errors(file: Path, error: ValidationError) -> str:
    """A validation error as the file, then one line per dotted key and what is wrong with it."""
    lines = [f"{file}: invalid configuration"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)



def read_config(file: Path) -> dict[str, Any]:
    """HOME/config.toml as TOML tables, for a service that validates only its own (ConfigError otherwise)."""
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: not found") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{file}: cannot be read as TOML: {exc}") from exc


class _LoggingOnly(BaseModel):
    """Only to have pydantic name errors ``logging.<key>``: the rest of the file is the services' own."""

    logging: LoggingSettings = LoggingSettings()


def load_logging_settings(home: Path) -> LoggingSettings:
    """HOME/config.toml's [logging] table alone (mes_bridge's ``serve``; the operator reads it with the rest)."""
    file = Path(home).resolve() / CONFIG_FILE
    try:
        return _LoggingOnly.model_validate(read_config(file)).logging
    except ValidationError as exc:
        raise ConfigError(format_errors(file, exc)) from exc
