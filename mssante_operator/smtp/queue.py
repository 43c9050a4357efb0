"""The outbound queue runner: claims due recipients, delivers them to peer operators, records the outcome.

Every worker process runs one; the store's leases make sure two runners (or two nodes) never hold the
same recipient. A recipient's status is committed before anything acts on it: a runner that dies
mid-delivery leaves its lease to expire, and another runner delivers again (at worst a duplicate that
the receiver recognises by its Message-ID). Temporary failures are retried on ``[outbound]``'s schedule
until ``max_lifetime``; then, or on a permanent failure, the sender gets a DSN (see notices.py).

The flow is continuous rather than in rounds: claims top up the work in flight, each message travels
on its own task (the client bounds connections per peer), and outcomes are recorded by group commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta

from mssante_base.message.dsn import wants_notice

from .. import metrics
from ..config import OutboundSettings
from ..outcomes import Reply, ResultKind
from ..store.facade import Store
from ..store.queue import Delivery, Outcome, RecipientStatus
from .group_commit import GroupCommit
from .notices import Notices
from .outbound import OutgoingMessage, OutgoingRecipient, RecipientResult
from .targets import DeliveryTargets

log = logging.getLogger(__name__)

MAX_IDLE_SLEEP = 5.0  # look at the queue at least this often (other nodes enqueue without waking us)
NOTICES_EVERY = 2.0  # DSNs owed are looked for this often (at once when an outcome owes one)
# Under load, claims are spaced by this much so that each takes what arrived meanwhile in one transaction,
# instead of one write transaction per message submitted (a lab pushing hundreds of reports a second).
CLAIM_PACE = 0.05
PURGE_EVERY = 600.0
MISSING_FILE = Reply(ResultKind.TEMPORARY, "the queued message file is missing on this node; left for a node "
                     "that has it", enhanced="4.3.0")


def retry_delay(attempts: int, *, schedule: Sequence[float], interval: float) -> timedelta:
    """How long to wait after ``attempts`` failed attempts: the schedule's step, then the interval."""
    return timedelta(seconds=schedule[attempts - 1] if 0 < attempts <= len(schedule) else interval)


def next_attempt_at(attempts: int, *, now: datetime, expires_at: datetime, schedule: Sequence[float],
                    interval: float) -> datetime | None:
    """When to try again after ``attempts`` failed attempts; None once that would be past ``expires_at``."""
    when = now + retry_delay(attempts, schedule=schedule, interval=interval)
    return None if when > expires_at else when


def outcome_of(delivery: Delivery, result: RecipientResult, *, now: datetime,
               settings: OutboundSettings) -> Outcome:
    """What one attempt's result does to the recipient (pure: the retry and notification policy)."""
    bounces = bool(delivery.sender)  # a DSN (null sender) never bounces
    if result.kind == ResultKind.DELIVERED:
        # A DSN-capable peer got NOTIFY and reports success itself; otherwise we say "relayed" (RFC 3461 5.2.2).
        notice = bounces and not result.peer_dsn and wants_notice(delivery.notify, "success")
        action = "delivered" if result.final else "relayed"
        return Outcome(delivery.recipient_id, RecipientStatus.DELIVERED, result.reply, action=action,
                       remote_mta=result.remote_mta, notice=notice)
    if result.kind == ResultKind.TEMPORARY:
        later = next_attempt_at(delivery.attempts + 1, now=now, expires_at=delivery.expires_at,
                                schedule=settings.retry_schedule, interval=settings.retry_interval)
        if later is not None:
            return Outcome(delivery.recipient_id, RecipientStatus.DEFERRED, result.reply, next_attempt_at=later,
                           action="delayed", remote_mta=result.remote_mta)
        reply = Reply(ResultKind.PERMANENT, f"gave up after {delivery.attempts + 1} attempts (delivery time expired); "
                      f"last: {result.reply.line}", enhanced="5.4.7")
        return Outcome(delivery.recipient_id, RecipientStatus.FAILED, reply, action="failed",
                       remote_mta=result.remote_mta, notice=bounces and wants_notice(delivery.notify, "failure"))
    return Outcome(delivery.recipient_id, RecipientStatus.FAILED, result.reply, action="failed",
                   remote_mta=result.remote_mta, notice=bounces and wants_notice(delivery.notify, "failure"))


def missing_file_outcome(delivery: Delivery, *, now: datetime, settings: OutboundSettings) -> Outcome:
    """A recipient whose message file this node cannot read: deferred on the retry schedule, even past its
    expiry (never failed nor bounced: the file is another node's, or the storage's fault, not the message's)."""
    delay = retry_delay(delivery.attempts + 1, schedule=settings.retry_schedule, interval=settings.retry_interval)
    return Outcome(delivery.recipient_id, RecipientStatus.DEFERRED, MISSING_FILE, next_attempt_at=now + delay)


class QueueRunner:
    """Delivers the outbound queue of one store, continuously, until stopped."""

    def __init__(self, *, store: Store, client: DeliveryTargets, settings: OutboundSettings, notices: Notices,
                 owner: str, writer: Executor) -> None:
        self._store = store
        self._client = client
        self._settings = settings
        self._notices = notices
        self.owner = owner
        self._recorder: GroupCommit[list[Outcome], int] = GroupCommit(self._record, writer, what="queue record")
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None
        self._last_purge = 0.0
        self._last_notices = 0.0
        self._notices_owed = False

    def wake(self) -> None:
        """New work was queued (by this process): look now instead of at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._main = asyncio.create_task(self._run(), name="outbound-queue")

    async def stop(self) -> None:
        """Stop claiming, let the deliveries in flight finish briefly, then give back what is still leased."""
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        if self._tasks:
            _, running = await asyncio.wait(self._tasks, timeout=10)
            for task in running:
                task.cancel()
        await self._recorder.drain()
        await self._client.close()
        released = await asyncio.to_thread(self._store.queue.release, self.owner)
        if released:
            log.info("queue runner stopped; %d leased recipients given back", released)

    # -- the loop --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                claimed = await self._claim()
                if self._notices_owed or asyncio.get_running_loop().time() - self._last_notices >= NOTICES_EVERY:
                    await self._notify_and_purge()
                if claimed:
                    await asyncio.sleep(CLAIM_PACE)
                else:
                    await self._sleep()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away for a moment: never let the runner die
                log.exception("outbound queue runner error; retrying in %.0f s", MAX_IDLE_SLEEP)
                await asyncio.sleep(MAX_IDLE_SLEEP)

    async def _claim(self) -> int:
        """Top up the work in flight; returns how many recipients were claimed."""
        room = self._settings.batch - self._in_flight
        if room <= self._settings.batch // 4:  # enough in flight: wait for some to finish
            self._room.clear()
            await self._room.wait()
            return 1
        now = datetime.now(UTC)
        claimed = await asyncio.to_thread(self._store.queue.claim, self.owner, now=now,
                                          lease=self._settings.lease, limit=room)
        groups: dict[tuple[str, str], list[Delivery]] = defaultdict(list)
        for delivery in claimed:
            groups[(delivery.queue_id, delivery.domain)].append(delivery)
        for group in groups.values():
            self._in_flight += len(group)
            task = asyncio.create_task(self._deliver(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claimed)

    async def _sleep(self) -> None:
        self._wake.clear()  # before reading next_due: a wake-up from now on is not lost
        due = await asyncio.to_thread(self._store.queue.next_due)
        delay = MAX_IDLE_SLEEP
        if due is not None:
            delay = min(delay, max(0.0, (due - datetime.now(UTC)).total_seconds()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def _deliver(self, group: list[Delivery]) -> None:
        """One message to the recipients of one domain: send, then record every recipient's outcome."""
        first = group[0]
        try:
            try:
                # A local file of some 50 KB, most often still in the page cache: read here, as the thread
                # hand-over would cost more than the read.
                raw = self._store.queue.read(first.blob_key)
            except OSError as exc:  # not readable here: a storage fault, never the message's failure
                log.error("queue %s: the message file is missing or unreadable on this node (%s); %d recipients "
                          "deferred, left for a node that has it", first.queue_id, exc.strerror or type(exc).__name__,
                          len(group))
                outcomes = [missing_file_outcome(d, now=datetime.now(UTC), settings=self._settings) for d in group]
            else:
                message = OutgoingMessage(
                    sender=first.sender, raw=raw, envid=first.envid, ret=first.ret,
                    recipients=tuple(OutgoingRecipient(d.recipient_id, d.address, d.notify, d.orcpt) for d in group),
                )
                results = await self._client.send(first.domain, message)
                now = datetime.now(UTC)
                by_key = {d.recipient_id: d for d in group}
                outcomes = [outcome_of(by_key[r.key], r, now=now, settings=self._settings) for r in results]
            await self._recorder.submit(outcomes)
            for outcome in outcomes:
                metrics.DELIVERIES.labels(outcome.reply.kind.value).inc()
                log.info("queue %s rcpt_domain=%s status=%s reply=%r", first.queue_id, first.domain,
                         outcome.status.value, outcome.reply.line[:200])
            if any(o.notice for o in outcomes):
                self._notices_owed = True
                self._wake.set()
        except Exception:  # recorded nothing: the lease expires and the recipients are tried again
            log.exception("queue %s: delivery to %s failed unexpectedly", first.queue_id, first.domain)
        finally:
            self._in_flight -= len(group)
            self._room.set()

    def _record(self, batches: list[list[Outcome]]) -> list[int]:
        now = datetime.now(UTC)
        self._store.queue.record(self.owner, [o for batch in batches for o in batch], now=now,
                                 notice_lease=self._settings.lease)
        return [len(batch) for batch in batches]

    async def _notify_and_purge(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_notices, self._notices_owed = loop.time(), False
        await self._notices.send_pending(self.owner, lease=self._settings.lease)
        if loop.time() - self._last_purge >= PURGE_EVERY:
            self._last_purge = loop.time()
            older_than = datetime.now(UTC) - timedelta(seconds=self._settings.keep_finished)
            purged = await asyncio.to_thread(self._store.queue.purge_finished, older_than)
            if purged:
                log.info("purged %d finished messages from the outbound queue", purged)
