"""The durable outbound queue: messages waiting to be relayed to peer operators, one state per recipient.

Durable as deliveries are: the blob is fsync'd before the transaction that queues it, so a message
accepted with 250 survives a crash. Workers *lease* due recipients (`claim`) before trying them and
`record` outcomes only for rows they still hold: a crashed worker's recipients become claimable again
when its lease runs out, and a worker whose lease was taken over cannot overwrite the new owner's work.
On PostgreSQL several processes or nodes claim side by side (``FOR UPDATE SKIP LOCKED``); on SQLite
claims queue on the store's write lock. Claims and records are batched: one transaction per batch.

Notices (DSNs) are claimed too, so that one worker sends each report however many workers or nodes run:
the transaction that records the outcome settling a message's current pass (no recipient left scheduled
or in flight) gives its owed final notices to the recording worker, under the message's row lock; one
report then covers them. A claim whose worker died runs out (``notice_until``) and another takes it over.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.orm import aliased

from mssante_base.storage.columns import UTCDateTime

from ..outcomes import Reply, ResultKind
from .blob_refs import drop_unreferenced_blobs
from .database import Database
from .models import Blob, OutboundMessage, OutboundRecipient, RecipientStatus
from .write_unit import OutboundEnvelope, check_envelope
from .write_unit import QueuedRecipient as QueuedRecipient  # what a queued envelope holds, named here too

M, R = OutboundMessage, OutboundRecipient
_BATCH = 500  # ids per IN list or executemany
NOTICE_LEASE = 300.0  # seconds a worker holds the notices it is to send (as [outbound] lease's default)
_T = TypeVar("_T")


PENDING = (RecipientStatus.SCHEDULED, RecipientStatus.DEFERRED)
FINAL = (RecipientStatus.DELIVERED, RecipientStatus.FAILED)


def new_queue_id() -> str:
    """A fresh queue id: 16 hex digits. A listener takes one per accepted message before it writes the
    ``Received`` field, so that its 250 reply, that field, the queue entry and the logs share one id."""
    return secrets.token_hex(8)


class QueueEntryNotFound(LookupError):
    """No queued message has that queue id (never was, or dropped or purged since)."""


@dataclass(frozen=True)
class Delivery:
    """One claimed recipient, with what sending it needs."""

    recipient_id: int
    queue_id: str
    address: str
    domain: str
    sender: str
    orcpt: str | None
    notify: tuple[str, ...] | None
    envid: str | None
    ret: str | None
    blob_key: str
    message_id: str | None
    attempts: int
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class Outcome:
    """What an attempt did to one recipient."""

    recipient_id: int
    status: RecipientStatus  # DELIVERED, DEFERRED or FAILED
    reply: Reply  # the peer's reply or our reason (shown by `queue show`, said in the DSN)
    next_attempt_at: datetime | None = None  # DEFERRED only
    action: str = ""  # DSN action: "delivered" | "relayed" | "failed" | "delayed" | ""
    remote_mta: str = ""
    notice: bool = False  # a DSN is owed for this final outcome (notified=False until sent)


@dataclass(frozen=True)
class Notice:
    """A DSN owed: a final outcome not yet notified ("final"), or a delay warning due ("delay")."""

    recipient_id: int
    queue_id: str
    kind: str  # "final" | "delay"
    address: str
    orcpt: str | None
    status: RecipientStatus
    action: str
    reply: Reply | None  # None only for a row never attempted
    remote_mta: str
    sender: str
    envid: str | None
    ret: str | None
    blob_key: str
    message_id: str | None
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class RecipientState:
    address: str
    status: RecipientStatus
    attempts: int
    next_attempt_at: datetime | None  # None once final
    last_attempt_at: datetime | None
    last_reply: Reply | None  # None until the first attempt
    action: str | None
    leased_until: datetime | None


@dataclass(frozen=True)
class RelayedRecipient:
    """One recipient of a queued message, as a delivery report received about it is checked against."""

    queue_id: str
    sender: str
    message_id: str | None
    envid: str | None
    address: str
    orcpt: str | None
    status: RecipientStatus


@dataclass(frozen=True)
class QueueDepth:
    """The queue at a glance (metrics): recipients by status, and when the oldest message still pending came."""

    recipients: dict[str, int]
    oldest_pending: datetime | None


@dataclass(frozen=True)
class QueueEntry:
    """A queued message as `queue ls` and `queue show` present it."""

    queue_id: str
    sender: str
    message_id: str | None
    size: int
    created_at: datetime
    expires_at: datetime
    submitted_by: str
    recipients: tuple[RecipientState, ...]


class OutboundQueue:
    """The queue over the store's database and blob files; synchronous like the rest of the store."""

    def __init__(self, store: Database) -> None:
        self._store = store
        # Statements of the hot path built once (as the write unit's): SQLAlchemy then skips rebuilding
        # them and computing their cache keys, a large part of a small statement's cost.
        lease_now = bindparam("b_now", type_=UTCDateTime())
        due = (
            select(R.id)
            .where(R.status.in_(PENDING), R.next_attempt_at <= lease_now,
                   or_(R.lease_until.is_(None), R.lease_until < lease_now))
            .order_by(R.next_attempt_at, R.outbound_message_id, R.id)
            .limit(bindparam("b_limit"))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        # One UPDATE leases the due rows (the subquery skips rows another claimer holds on PostgreSQL).
        self._lease = (
            update(R).where(R.id.in_(due))
            .values(lease_owner=bindparam("b_owner"), lease_until=bindparam("b_until", type_=UTCDateTime()))
            .returning(R.id)
        )
        self._leased = _deliveries().where(R.lease_owner == bindparam("b_owner"), R.id.in_(bindparam("b_ids",
                                                                                                      expanding=True)))
        self._record = (
            update(R)
            .where(R.id == bindparam("b_id"), R.lease_owner == bindparam("b_owner"))
            .values(
                status=bindparam("b_status"),
                attempts=R.attempts + 1,
                last_attempt_at=bindparam("b_now", type_=UTCDateTime()),
                next_attempt_at=func.coalesce(bindparam("b_next", type_=UTCDateTime()), R.next_attempt_at),
                final_at=bindparam("b_final", type_=UTCDateTime()),
                last_kind=bindparam("b_kind"),
                last_code=bindparam("b_code"),
                last_enhanced=bindparam("b_enhanced"),
                last_text=bindparam("b_text"),
                action=bindparam("b_action"),
                remote_mta=bindparam("b_remote_mta"),
                notified=bindparam("b_notified"),
                lease_owner=None,
                lease_until=None,
                # A final outcome ends any delay-warning claim: its own report is claimed below.
                notice_owner=case((bindparam("b_final", type_=UTCDateTime()).is_not(None), None),
                                  else_=R.notice_owner),
            )
        )
        # The owed final notices of messages whose pass is over (nothing scheduled or in flight) go to the
        # recording worker; run under the messages' row locks, so that of two workers finishing the last
        # recipients of one message at once, the second sees the first's outcome and claims the report.
        other = aliased(R)
        in_pass = exists().where(other.outbound_message_id == R.outbound_message_id,
                                 or_(other.status == RecipientStatus.SCHEDULED.value, other.lease_owner.is_not(None)))
        self._claim_reports = (
            update(R)
            .where(R.outbound_message_id.in_(bindparam("b_messages", expanding=True)), R.final_at.is_not(None),
                   R.notified.is_(False), R.notice_owner.is_(None), ~in_pass)
            .values(notice_owner=bindparam("b_owner"), notice_until=bindparam("b_until", type_=UTCDateTime()))
        )

    # -- queueing ----------------------------------------------------------------------------

    def enqueue(self, raw: bytes, envelope: OutboundEnvelope, *, now: datetime, expires_at: datetime) -> str:
        """Write the blob (fsync'd), then queue it in one transaction: queued for good when this returns.
        (Queueing with other mail in one transaction: ``WriteUnit.enqueue``.)"""
        check_envelope(envelope)  # before any file is written
        blob = self._store.blobs.write(raw)
        with self._store.transaction() as tx:
            try:
                queue_id = tx.enqueue(tx.insert_blob(blob, at=now), blob.size, envelope, now=now,
                                      expires_at=expires_at, queue_id=new_queue_id())
            except BaseException:
                self._store.blobs.remove(blob.key)  # nothing committed: the file is certainly unreferenced
                raise
        # Were COMMIT itself to fail, it may still have happened: the file is left to collect_orphan_blobs().
        return queue_id

    # -- delivery workers --------------------------------------------------------------------

    def claim(self, owner: str, *, now: datetime, lease: float, limit: int = 200) -> list[Delivery]:
        """Lease up to `limit` due recipients to `owner` for `lease` seconds, earliest due first.

        Due: scheduled or deferred, next attempt reached, and not leased (or the lease ran out). Rows
        another transaction is claiming are skipped, never waited for (PostgreSQL SKIP LOCKED).
        """
        with self._store.writing() as conn:
            ids = list(conn.scalars(self._lease, {"b_now": now, "b_limit": limit, "b_owner": owner,
                                                  "b_until": now + timedelta(seconds=lease)}))
            if not ids:
                return []
            rows = conn.execute(self._leased, {"b_owner": owner, "b_ids": ids}).all()
        rows.sort(key=lambda row: (row.next_attempt_at, row.outbound_message_id, row.id))
        return [_delivery(row) for row in rows]

    def record(self, owner: str, outcomes: Sequence[Outcome], *, now: datetime,
               notice_lease: float = NOTICE_LEASE) -> int:
        """Apply attempt outcomes, in one transaction, to the rows `owner` still holds; returns how many.

        A row whose lease ran out is still `owner`'s until another worker claims it: its outcome is kept
        (the attempt did happen); once claimed by another, this owner's outcome is ignored. The final
        notices this settles are `owner`'s to send (see `pending_notices`) for `notice_lease` seconds.
        """
        for outcome in outcomes:
            _check_outcome(outcome)
        if not outcomes:
            return 0
        with self._store.writing() as conn:  # the UPDATE's owner condition skips rows another worker took over
            messages = self._lock_messages(conn, [o.recipient_id for o in outcomes])
            count = conn.execute(self._record, [_record_params(owner, o, now) for o in outcomes]).rowcount
            until = now + timedelta(seconds=notice_lease)
            for batch in _chunks(messages, _BATCH):
                conn.execute(self._claim_reports, {"b_messages": list(batch), "b_owner": owner, "b_until": until})
            return count

    def _lock_messages(self, conn: Connection, recipient_ids: list[int]) -> list[int]:
        """The ids of these recipients' messages, row-locked in id order (PostgreSQL; SQLite has one writer)."""
        messages: set[int] = set()
        for batch in _chunks(recipient_ids, _BATCH):
            messages.update(conn.scalars(select(R.outbound_message_id).where(R.id.in_(batch))))
        ordered = sorted(messages)
        if self._store.dialect == "postgresql":
            for batch in _chunks(ordered, _BATCH):
                conn.execute(select(M.id).where(M.id.in_(batch)).order_by(M.id).with_for_update()).all()
        return ordered

    def release(self, owner: str) -> int:
        """Give back every lease of `owner` (clean shutdown): its recipients, and the notices it owed, are
        claimable at once."""
        with self._store.writing() as conn:
            conn.execute(update(R).where(R.notice_owner == owner).values(notice_until=None))
            return conn.execute(
                update(R).where(R.lease_owner == owner).values(lease_owner=None, lease_until=None)
            ).rowcount

    def next_due(self) -> datetime | None:
        """When a recipient next becomes claimable: its next attempt, or the end of its lease if later."""
        claimable = case((R.lease_until > R.next_attempt_at, R.lease_until), else_=R.next_attempt_at)
        query = select(type_coerce(func.min(claimable), UTCDateTime())).where(R.status.in_(PENDING))
        with self._store.reading() as conn:
            return conn.scalar(query)

    # -- notices (DSN) -----------------------------------------------------------------------

    def pending_notices(self, owner: str, *, now: datetime, delay_warning: float | None,
                        lease: float = NOTICE_LEASE, limit: int = 200) -> list[Notice]:
        """The notices `owner` is to send: the final ones its records claimed or that it takes over from a
        worker whose claim ran out, then (if `delay_warning` is set, in seconds) the delay warnings it claims
        now: deferred recipients queued at least that long ago whose NOTIFY allows a warning not yet sent.
        Null-sender messages never get delay warnings (nobody to warn). Claims last `lease` seconds."""
        given_up = and_(R.notice_owner.is_not(None), or_(R.notice_until.is_(None), R.notice_until < now))
        owed_final = and_(R.final_at.is_not(None), R.notified.is_(False))
        owed_delay = and_(R.status == RecipientStatus.DEFERRED.value, R.warned.is_(False))
        claimable = [and_(owed_final, given_up)]
        if delay_warning is not None:
            claimable.append(and_(owed_delay, or_(R.notice_owner.is_(None), given_up), R.outbound_message_id.in_(
                select(M.id).where(M.sender != "", M.created_at <= now - timedelta(seconds=delay_warning))),
                or_(R.notify.is_(None), R.notify.contains("DELAY"))))  # fmt: skip
        with self._store.reading() as conn:  # most of the time there is nothing to claim: no write then
            candidates = list(conn.scalars(select(R.id).where(or_(*claimable)).order_by(R.id).limit(limit)))
        if candidates:
            with self._store.writing() as conn:  # the conditions again: of two claimers, one gets each row
                conn.execute(update(R).where(R.id.in_(candidates), or_(*claimable)).values(
                    notice_owner=owner, notice_until=now + timedelta(seconds=lease)))  # fmt: skip
        mine = R.notice_owner == owner
        finals = _notices().where(mine, owed_final).order_by(R.final_at, R.id)
        with self._store.reading() as conn:
            notices = [_notice(row, "final") for row in conn.execute(finals.limit(limit))]
            if len(notices) < limit:
                delayed = _notices().where(mine, owed_delay).order_by(M.created_at, R.id).limit(limit - len(notices))
                notices += [_notice(row, "delay") for row in conn.execute(delayed)]
        return notices

    def mark_notified(self, recipient_ids: Iterable[int]) -> None:
        """The final notices of these recipients are sent (or queued themselves)."""
        self._set_flag(recipient_ids, notified=True)

    def mark_warned(self, recipient_ids: Iterable[int]) -> None:
        """The delay warnings of these recipients are sent: one warning per recipient."""
        self._set_flag(recipient_ids, warned=True)

    def _set_flag(self, recipient_ids: Iterable[int], **flag: bool) -> None:
        with self._store.writing() as conn:
            for batch in _chunks(list(recipient_ids), _BATCH):
                conn.execute(update(R).where(R.id.in_(batch)).values(**flag))

    def read(self, blob_key: str) -> bytes:
        return self._store.blobs.read(blob_key)

    def recipients_of(self, queue_ids: Sequence[str]) -> list[RelayedRecipient]:
        """The recipients of the queued messages with these ids (unknown or purged ids give nothing)."""
        if not queue_ids:
            return []
        query = (
            select(M.queue_id, M.sender, M.message_id, M.envid, R.address, R.orcpt, R.status)
            .join(M, R.outbound_message_id == M.id)
            .where(M.queue_id.in_(list(queue_ids)[:_BATCH]))
            .order_by(R.id)
        )
        with self._store.reading() as conn:
            return [RelayedRecipient(queue_id=row.queue_id, sender=row.sender, message_id=row.message_id,
                                     envid=row.envid, address=row.address, orcpt=row.orcpt,
                                     status=RecipientStatus(row.status)) for row in conn.execute(query)]

    def depth(self) -> QueueDepth:
        """Recipients by status and the oldest pending message's arrival: one grouped query, cheap enough for
        every scrape."""
        query = (select(R.status, func.count(R.id), type_coerce(func.min(M.created_at), UTCDateTime()))
                 .join(M, M.id == R.outbound_message_id).group_by(R.status))
        with self._store.reading() as conn:
            rows = conn.execute(query).all()
        pending = [oldest for status, _, oldest in rows if status in PENDING and oldest is not None]
        return QueueDepth({status: count for status, count, _ in rows}, min(pending, default=None))

    # -- operators (`queue` command) ---------------------------------------------------------

    def entries(self, *, status: RecipientStatus | None = None, limit: int = 1000) -> list[QueueEntry]:
        """Queued messages, oldest first, each with all its recipients; with `status`, only the messages
        that have a recipient in that status."""
        query = select(M).order_by(M.created_at, M.id).limit(limit)
        if status is not None:
            wanted = RecipientStatus(status).value
            query = query.where(exists().where(R.outbound_message_id == M.id, R.status == wanted))
        with self._store.reading() as conn:
            return _entries(conn, conn.execute(query).all())

    def show(self, queue_id: str) -> QueueEntry | None:
        with self._store.reading() as conn:
            found = _entries(conn, conn.execute(select(M).where(M.queue_id == queue_id)).all())
        return found[0] if found else None

    def retry(self, queue_id: str | None, *, now: datetime) -> int:
        """Make the pending recipients of one message (None: of every message) due `now`; returns how many.
        Raises QueueEntryNotFound for an unknown queue id."""
        with self._store.writing() as conn:
            statement = update(R).where(R.status.in_(PENDING)).values(next_attempt_at=now)
            if queue_id is not None:
                statement = statement.where(R.outbound_message_id == _message_row(conn, queue_id).id)
            return conn.execute(statement).rowcount

    def drop(self, queue_id: str) -> int:
        """Remove a message and all its recipients without any notice; returns how many recipients went.
        The blob goes too unless a mailbox copy still uses it. Raises QueueEntryNotFound."""
        with self._store.writing() as conn:
            message = _message_row(conn, queue_id)
            count = conn.execute(delete(R).where(R.outbound_message_id == message.id)).rowcount
            conn.execute(delete(M).where(M.id == message.id))
            keys = drop_unreferenced_blobs(conn, [message.blob_id])
        self._store.remove_files(keys)
        return count

    def purge_finished(self, older_than: datetime) -> int:
        """Forget messages whose recipients are all final (before `older_than`) and notified; returns how many."""
        unfinished = exists().where(
            R.outbound_message_id == M.id,
            or_(R.final_at.is_(None), R.final_at > older_than, R.notified.is_(False)),
        )
        purged = 0
        while True:
            with self._store.writing() as conn:
                rows = conn.execute(select(M.id, M.blob_id).where(~unfinished).order_by(M.id).limit(_BATCH)).all()
                ids = [row.id for row in rows]
                if ids:
                    conn.execute(delete(R).where(R.outbound_message_id.in_(ids)))
                    purged += conn.execute(delete(M).where(M.id.in_(ids))).rowcount
                keys = drop_unreferenced_blobs(conn, {row.blob_id for row in rows})
            self._store.remove_files(keys)
            if len(rows) < _BATCH:
                return purged



# -- helpers ---------------------------------------------------------------------------------


def _check_outcome(outcome: Outcome) -> None:
    if not isinstance(outcome.reply, Reply):  # a reply line is not parsed back: say so to callers of old
        raise TypeError(f"an outcome's reply is an outcomes.Reply, not {type(outcome.reply).__name__}")
    if outcome.status == RecipientStatus.DEFERRED and outcome.next_attempt_at is None:
        raise ValueError("a deferred outcome needs next_attempt_at")
    if outcome.status not in (RecipientStatus.DEFERRED, *FINAL):
        raise ValueError(f"an outcome is delivered, deferred or failed, not {outcome.status!r}")


def _record_params(owner: str, outcome: Outcome, now: datetime) -> dict[str, Any]:
    final = outcome.status in FINAL
    return {
        "b_id": outcome.recipient_id, "b_owner": owner, "b_status": RecipientStatus(outcome.status).value,
        "b_now": now, "b_next": None if final else outcome.next_attempt_at, "b_final": now if final else None,
        "b_kind": ResultKind(outcome.reply.kind).value, "b_code": outcome.reply.code,
        "b_enhanced": outcome.reply.enhanced, "b_text": outcome.reply.text,
        "b_action": outcome.action or None, "b_remote_mta": outcome.remote_mta or None,
        "b_notified": final and not outcome.notice,
    }  # fmt: skip


def _notify(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(keyword for keyword in value.split(",") if keyword)


def _deliveries() -> Any:
    return (
        select(R.id, M.queue_id, R.address, R.domain, M.sender, R.orcpt, R.notify, M.envid, M.ret,
               Blob.key.label("blob_key"), M.message_id, R.attempts, M.created_at, M.expires_at,
               R.next_attempt_at, R.outbound_message_id)
        .join(M, R.outbound_message_id == M.id)
        .join(Blob, M.blob_id == Blob.id)
    )  # fmt: skip


def _delivery(row: Any) -> Delivery:
    return Delivery(
        recipient_id=row.id, queue_id=row.queue_id, address=row.address, domain=row.domain, sender=row.sender,
        orcpt=row.orcpt, notify=_notify(row.notify), envid=row.envid, ret=row.ret, blob_key=row.blob_key,
        message_id=row.message_id, attempts=row.attempts, created_at=row.created_at, expires_at=row.expires_at,
    )  # fmt: skip


def _notices() -> Any:
    return (
        select(R.id, M.queue_id, R.address, R.orcpt, R.status, R.action, *_LAST_REPLY, R.remote_mta, M.sender,
               M.envid, M.ret, Blob.key.label("blob_key"), M.message_id, M.created_at, R.last_attempt_at,
               R.next_attempt_at)
        .join(M, R.outbound_message_id == M.id)
        .join(Blob, M.blob_id == Blob.id)
    )  # fmt: skip


_LAST_REPLY = (R.last_kind, R.last_code, R.last_enhanced, R.last_text)


def _last_reply(row: Any) -> Reply | None:
    if row.last_kind is None:
        return None
    return Reply(ResultKind(row.last_kind), row.last_text or "", row.last_code, row.last_enhanced)


def _notice(row: Any, kind: str) -> Notice:
    status = RecipientStatus(row.status)
    return Notice(
        recipient_id=row.id, queue_id=row.queue_id, kind=kind, address=row.address, orcpt=row.orcpt,
        status=status, action=row.action or ("delayed" if kind == "delay" else ""), reply=_last_reply(row),
        remote_mta=row.remote_mta or "", sender=row.sender, envid=row.envid, ret=row.ret, blob_key=row.blob_key,
        message_id=row.message_id, created_at=row.created_at, last_attempt_at=row.last_attempt_at,
        next_attempt_at=None if status in FINAL else row.next_attempt_at,
    )  # fmt: skip


def _message_row(conn: Connection, queue_id: str) -> Any:
    """The queued message's row, locked against a concurrent drop or purge (PostgreSQL)."""
    row = conn.execute(select(M.id, M.blob_id).where(M.queue_id == queue_id).with_for_update()).one_or_none()
    if row is None:
        raise QueueEntryNotFound(f"no queued message {queue_id}")
    return row


def _entries(conn: Connection, messages: Sequence[Any]) -> list[QueueEntry]:
    """QueueEntry per message row, recipients read in one query per batch."""
    recipients: dict[int, list[RecipientState]] = {row.id: [] for row in messages}
    for batch in _chunks([row.id for row in messages], _BATCH):
        query = select(R).where(R.outbound_message_id.in_(batch)).order_by(R.id)
        for r in conn.execute(query):
            status = RecipientStatus(r.status)
            recipients[r.outbound_message_id].append(RecipientState(
                address=r.address, status=status, attempts=r.attempts,
                next_attempt_at=None if status in FINAL else r.next_attempt_at, last_attempt_at=r.last_attempt_at,
                last_reply=_last_reply(r), action=r.action, leased_until=r.lease_until,
            ))  # fmt: skip
    return [
        QueueEntry(
            queue_id=m.queue_id, sender=m.sender, message_id=m.message_id, size=m.size, created_at=m.created_at,
            expires_at=m.expires_at, submitted_by=m.submitted_by, recipients=tuple(recipients[m.id]),
        )
        for m in messages
    ]


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
