"""One IMAP connection's state and the dispatch of parsed commands to their handlers.

The network layer (``server.py``) frames and parses commands and calls ``Session.execute``; each
command family lives in its own module under ``handlers/`` and registers itself with
``@handles(CommandClass, states...)``. Handlers write untagged data with ``session.untagged`` and
return a ``Reply`` for the tagged line. Store calls are synchronous: handlers run them with
``session.run`` (a thread), never on the event loop.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from mssante_base.connection_limits import KeyedCounter

from ..auth import sasl
from ..auth.authenticator import Authenticator, Principal
from ..store import Store
from ..store.folders import DELIMITER, Folder, MessageMeta, NoSuchFolder, canonical_name
from . import wire
from .commands import Command, Create, List, Lsub, Rename
from .guard import AccountGuard
from .selected import SelectedFolder, Updates
from .watcher import FolderWatcher, Watch

if TYPE_CHECKING:
    from mssante_base.trust.tls import PeerTls

log = logging.getLogger(__name__)

T = TypeVar("T")

INLINE_READ_ROWS = 1000  # see Session.read
SHARED_PREFIX = "Shared"  # ORG mailboxes a user is a delegate of: Shared/<address>/<folder>


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


ANY_STATE = (State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED)
LOGGED_IN = (State.AUTHENTICATED, State.SELECTED)
SELECTED_ONLY = (State.SELECTED,)


@dataclass(frozen=True)
class Reply:
    """The tagged completion: OK, NO or BAD, an optional response code and a human sentence."""

    status: str
    text: str
    code: str | None = None

    def line(self, tag: str) -> bytes:
        code = f"[{self.code}] " if self.code else ""
        return f"{tag} {self.status} {code}{self.text}\r\n".encode()


def ok(text: str, code: str | None = None) -> Reply:
    return Reply("OK", text, code)


def no(text: str, code: str | None = None) -> Reply:
    return Reply("NO", text, code)


def bad(text: str, code: str | None = None) -> Reply:
    return Reply("BAD", text, code)


@dataclass
class ServerContext:
    """What every session of a listener shares."""

    store: Store
    authenticator: Authenticator
    watcher: FolderWatcher
    hostname: str
    append_limit: int
    tls_available: Callable[[], bool] = lambda: True
    capabilities_extra: tuple[str, ...] = ()
    # Logged-in sessions per login, shared by every IMAP listener of the process.
    user_connections: KeyedCounter = field(default_factory=lambda: KeyedCounter(20))
    # Closes the sessions of an account disabled after login (None: nobody watches, as in unit tests).
    guard: AccountGuard | None = None


@dataclass(frozen=True)
class MailboxRef:
    """A client's mailbox name resolved to (account address, folder name in that account)."""

    address: str
    folder: str
    client_name: str


Handler = Callable[["Session", Any], Awaitable[Reply]]
_HANDLERS: dict[type[Command], tuple[Handler, tuple[State, ...]]] = {}

BASE_CAPABILITIES = (
    "IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UIDPLUS", "MOVE", "UNSELECT",
    "SPECIAL-USE", "CHILDREN", "CONDSTORE", "ESEARCH", "STATUS=SIZE", "WITHIN", "MULTIAPPEND", "OBJECTID", "SAVEDATE",
)


def handles(command: type[Command], states: tuple[State, ...]) -> Callable[[Handler], Handler]:
    """Register a handler for a command class, allowed in ``states``."""

    def register(handler: Handler) -> Handler:
        _HANDLERS[command] = (handler, states)
        return handler

    return register


@dataclass
class Session:
    """The state of one connection: who is logged in, what is selected, what was enabled."""

    ctx: ServerContext
    write: Callable[[bytes], Awaitable[None]]
    peer_ip: str
    tls: bool = False
    peer_tls: PeerTls | None = None
    state: State = State.NOT_AUTHENTICATED
    principal: Principal | None = None
    selected: SelectedFolder | None = None
    watch: Watch | None = None
    enabled: set[str] = field(default_factory=set)
    # Set by the network layer: send "+ <base64 data>", return the client's decoded answer (None: "*").
    read_response: Callable[[bytes], Awaitable[bytes | None]] | None = None

    # -- plumbing ----------------------------------------------------------------------------

    async def untagged(self, data: bytes | str) -> None:
        payload = data.encode() if isinstance(data, str) else data
        await self.write(b"* " + payload + b"\r\n")

    async def challenge(self, data: bytes) -> bytes:
        """One SASL round trip; raises SaslCancelled when the client answers ``*``."""
        if self.read_response is None:
            raise sasl.SaslError("this connection cannot carry a SASL exchange")
        answer = await self.read_response(data)
        if answer is None:
            raise sasl.SaslCancelled("cancelled by the client")
        return answer

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking store call (a write: it may wait for the writer lock and the disk), off the event loop."""
        return await asyncio.to_thread(function, *args, **kwargs)

    async def read(self, function: Callable[..., T], *args: Any, rows: int = 0, **kwargs: Any) -> T:
        """A store read. On SQLite, one of up to INLINE_READ_ROWS rows (``rows``: the caller's estimate) runs
        on the event loop: a WAL reader never waits for a lock, and such a read costs a tenth of the hand-off
        to a thread. Larger ones, and every read on PostgreSQL (a network round trip), go to a thread."""
        if rows <= INLINE_READ_ROWS and self.ctx.store.local_reads:
            return function(*args, **kwargs)
        return await asyncio.to_thread(function, *args, **kwargs)

    def capabilities(self) -> list[str]:
        capabilities = list(BASE_CAPABILITIES)
        capabilities.append(f"APPENDLIMIT={self.ctx.append_limit}")
        if self.state is State.NOT_AUTHENTICATED:
            if not self.tls and self.ctx.tls_available():
                capabilities += ["STARTTLS", "LOGINDISABLED"]
            else:
                capabilities += ["AUTH=PLAIN", "AUTH=OAUTHBEARER", "AUTH=XOAUTH2"]
                if self.peer_tls is not None:
                    capabilities.append("AUTH=EXTERNAL")
        return capabilities + list(self.ctx.capabilities_extra)

    async def execute(self, command: Command) -> Reply:
        """Run one command in the current state; unknown or misplaced commands get BAD."""
        # A subclass shares its parent's handler unless it has its own (EXAMINE is a read-only SELECT).
        entry = next((_HANDLERS[cls] for cls in type(command).__mro__ if cls in _HANDLERS), None)
        if entry is None:
            return bad(f"{command.name} is not supported")
        handler, states = entry
        if self.state not in states:
            return bad(f"{command.name} is not allowed in the {self.state.value} state")
        if command.names_unreadable_mailbox() and not isinstance(command, List | Lsub):  # Dovecot's answer
            return no("Mailbox name is not valid modified UTF-7", "CANNOT" if isinstance(command, Create | Rename)
                      else "NONEXISTENT")
        try:
            return await handler(self, command)
        except Exception as exc:  # the connection goes on whatever one command met
            if self.state is State.SELECTED and await self._selected_folder_is_gone():
                # RFC 2180 3: another session deleted the selected folder. Say so and leave the
                # selected state; [CLOSED] (RFC 7162 3.2.11) tells the client no folder is selected.
                await self.unselect()
                await self.untagged("OK [CLOSED] the selected mailbox no longer exists")
                return no("the selected mailbox was deleted by another session", "NONEXISTENT")
            if isinstance(exc, NoSuchFolder):
                return no("no such mailbox", "NONEXISTENT")
            log.exception("imap %s failed user=%s", command.name, self.principal.login if self.principal else "-")
            return no(f"{command.name} failed on our side; try again later", "SERVERBUG")

    async def _selected_folder_is_gone(self) -> bool:
        view = self.selected
        return view is not None and await self.read(self.ctx.store.folders.get_by_id, view.folder.id) is None

    # -- mailbox names -----------------------------------------------------------------------

    def resolve(self, client_name: str) -> MailboxRef | None:
        """Map a client's name to an account and folder; None when this user may not see it."""
        assert self.principal is not None
        name = canonical_name(client_name)
        prefix = SHARED_PREFIX + DELIMITER
        if name.startswith(prefix):
            rest = name[len(prefix):]
            address, _, folder = rest.partition(DELIMITER)
            if not self.principal.may_open(address) or address == self.principal.login:
                return None
            return MailboxRef(address.lower(), canonical_name(folder) if folder else "", name)
        if name == SHARED_PREFIX:
            return MailboxRef("", "", name)
        return MailboxRef(self.principal.login, name, name)

    def client_name(self, address: str, folder: str) -> str:
        assert self.principal is not None
        if address == self.principal.login:
            return folder
        return DELIMITER.join((SHARED_PREFIX, address, folder)) if folder else DELIMITER.join((SHARED_PREFIX, address))

    def shared_addresses(self) -> list[str]:
        assert self.principal is not None
        return sorted(entry.address for entry in self.principal.delegated)

    # -- selection ---------------------------------------------------------------------------

    async def select(self, folder: Folder, readonly: bool, condstore: bool) -> SelectedFolder:
        await self.unselect()
        store = self.ctx.store.folders
        # Watching starts before the first read, so no change after that read goes unnoticed.
        self.watch = self.ctx.watcher.watch(folder.id)
        # The folder's index (its counters, then its messages: see Folders.index), costing what the changes
        # since this process last looked cost, not the folder's size. \Recent is claimed last, only up to
        # what the view holds (EXAMINE reports it without claiming it).
        try:
            found = await self.read(store.index, folder.id)
            if found is None:
                raise NoSuchFolder("no such mailbox")
            fresh, index = found
            to = max(fresh.uidnext, index.uids[-1] + 1 if index.uids else 0)
            first_recent = await self.run(store.claim_recent, folder.id, to, peek=readonly)
        except BaseException:
            await self.unselect()
            raise
        self.selected = SelectedFolder(fresh, readonly, index.uids, first_recent, condstore=condstore,
                                       keywords=index.keywords, first_unseen=index.first_unseen)
        self.watch.seen = (self.selected.uidnext, self.selected.highestmodseq)
        self.state = State.SELECTED
        return self.selected

    def admit(self, principal: Principal) -> bool:
        """Count this session against its user's connection limit (False: over the limit)."""
        if not self.ctx.user_connections.acquire(principal.login.lower()):
            return False
        self.principal = principal
        return True

    async def close(self) -> None:
        """The connection is gone: drop the selection and give back the user's connection slot."""
        await self.unselect()
        if self.principal is not None:
            self.ctx.user_connections.release(self.principal.login.lower())
            self.principal = None

    async def unselect(self) -> None:
        if self.watch is not None:
            self.watch.close()
        self.watch, self.selected = None, None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    async def refresh(self, *, expunges_allowed: bool = True) -> None:
        """Send the untagged updates for changes made by anyone since the view was last updated."""
        view = self.selected
        if view is None:
            return
        store = self.ctx.store.folders
        found = await self.read(store.changes, view.folder.id, (view.uidnext, view.highestmodseq),
                               force=expunges_allowed and view.has_pending_expunges)
        if found is None:
            return  # the folder was deleted under us; the next SELECT will say so
        if found.changed is None:
            return
        uidnext, highestmodseq, changed = found.uidnext, found.highestmodseq, found.changed
        # The full UID list is read only when the count says something was expunged.
        current = None if found.count == view.count_after(changed) else await self.read(store.uids, view.folder.id)
        recent = None
        to = view.next_uid(uidnext, changed)
        if to > view.uidnext:  # claimed after the read, up to what was read (see Folders.claim_recent)
            recent = (await self.run(store.claim_recent, view.folder.id, to, peek=view.readonly), to)
        updates = view.apply(current, changed, expunges_allowed=expunges_allowed, recent=recent,
                             highestmodseq=highestmodseq)
        if self.watch is not None:
            self.watch.seen = (view.uidnext, view.highestmodseq)
        await self.send_updates(updates)

    async def announce_flags(self) -> None:
        """FLAGS and PERMANENTFLAGS: the flags and keywords of the selected folder (RFC 3501 7.2.6, 7.1)."""
        view = self.selected
        if view is not None:
            await self.untagged("FLAGS (" + " ".join(view.flags) + ")")
            permanent = "" if view.readonly else " ".join(view.flags) + " \\*"
            await self.untagged(f"OK [PERMANENTFLAGS ({permanent})] flags the client may set")

    async def learn_keywords(self, metas: Iterable[MessageMeta]) -> None:
        """Announce the keywords of these messages the client has not been told of, before a response
        shows them (another session may have added one since the last refresh)."""
        if self.selected is not None and self.selected.learn_keywords(metas):
            await self.announce_flags()

    async def send_updates(self, updates: Updates) -> None:
        if updates.new_keywords:
            await self.announce_flags()
        for seq in updates.expunged:
            await self.untagged(f"{seq} EXPUNGE")
        if updates.exists is not None:
            await self.untagged(f"{updates.exists} EXISTS")
            await self.untagged(f"{updates.recent or 0} RECENT")
        view = self.selected
        for seq, meta in updates.flags:
            items: list[Any] = [wire.Atom("FLAGS"), flag_list(meta.flags, view.recent if view else set(), meta.uid)]
            items += [wire.Atom("UID"), meta.uid]
            if view is not None and (view.condstore or "CONDSTORE" in self.enabled):
                items += [wire.Atom("MODSEQ"), [meta.modseq]]
            await self.untagged(f"{seq} FETCH ".encode() + wire.encode(items))


def flag_list(flags: frozenset[str] | set[str], recent: set[int], uid: int) -> list[wire.Atom]:
    """A message's flags as IMAP atoms, with \\Recent when it is recent for this session."""
    atoms = [wire.Atom(f) for f in sorted(flags)]
    if uid in recent:
        atoms.append(wire.Atom("\\Recent"))
    return atoms

