"""FETCH and UID FETCH (RFC 3501 6.4.5 and 6.4.8; CHANGEDSINCE and MODSEQ, RFC 7162 3.1.4).

Also the helpers the other message commands share: turning a sequence set into the UIDs of the
session's view, and CONDSTORE enabling (RFC 7162 3.1).

Message files are read and parsed in a thread a run at a time (up to LOAD_BYTES, or one larger
message), and each response is written as soon as it is built, so a FETCH of hundreds of large
messages never holds more than that run in memory. A message file is read only when an item needs
its content (ENVELOPE, BODY[STRUCTURE], RFC822*, BODY[...]), once per message and command.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator

from ...store.folders import FlagMode, MessageMeta
from .. import wire
from ..commands import BodySection, Fetch, FetchAttribute, FetchItem
from ..message import MessageStructure
from ..object_ids import email_id
from ..selected import SelectedFolder
from ..sequence import SequenceSet
from ..session import SELECTED_ONLY, Reply, Session, bad, flag_list, handles, no, ok

log = logging.getLogger(__name__)

SEEN = "\\Seen"
CONDSTORE = "CONDSTORE"
INVALID_SEQUENCE = "invalid message sequence number"

_CONTENT_ITEMS = frozenset({"ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822", "RFC822.HEADER", "RFC822.TEXT"})
_SEEN_ITEMS = frozenset({"RFC822", "RFC822.TEXT"})  # RFC822.HEADER is BODY.PEEK[HEADER]
_MODSEQ = FetchAttribute("MODSEQ")
_SAVEDATE = FetchAttribute("SAVEDATE")
LOAD_BYTES = 1 << 20  # message files read and parsed in one thread hand-off, at most (or one message)
LOAD_MESSAGES = 64
_JOIN_LIMIT = 1 << 16  # responses above this size are written piece by piece, not joined
UID_BATCH = 10_000  # UIDs per store call: each is one SQL IN list, and bind parameters are limited


# --------------------------------------------------------------------------- shared helpers


def out_of_range(view: SelectedFolder, sequence_set: SequenceSet, uid: bool) -> bool:
    """A message sequence number above EXISTS, or ``*`` in an empty mailbox (never for UID sets)."""
    return not uid and sequence_set.out_of_range(view.exists)


def selected_uids(view: SelectedFolder, sequence_set: SequenceSet, uid: bool) -> list[int]:
    """The UIDs of the view's messages in ``sequence_set``, ascending, each once.

    Sequence numbers are positions in the view (check :func:`out_of_range` first); a UID set names
    the existing UIDs it covers, ``*`` being the highest UID in use, and missing UIDs are skipped.
    """
    uids = view.uids
    if not uid:
        return [uids[seq - 1] for seq in sequence_set.iter(view.exists)]
    found: list[int] = []
    for low, high in sequence_set.intervals(view.max_uid):
        found.extend(uids[bisect.bisect_left(uids, low) : bisect.bisect_right(uids, high)])
    return found


def batches(uids: list[int]) -> Iterator[list[int]]:
    """``uids`` in slices small enough for one store call (PostgreSQL takes 65535 parameters at most)."""
    for start in range(0, len(uids), UID_BATCH):
        yield uids[start : start + UID_BATCH]


def condstore_active(session: Session) -> bool:
    """Whether this session is CONDSTORE-aware (RFC 7162 3.1): MODSEQ goes with flag changes."""
    view = session.selected
    return CONDSTORE in session.enabled or (view is not None and view.condstore)


async def enable_condstore(session: Session) -> None:
    """A CONDSTORE enabling command was received (RFC 7162 3.1): the session is CONDSTORE-aware until
    it ends; the first such command with a mailbox selected announces its HIGHESTMODSEQ."""
    if condstore_active(session):
        return
    session.enabled.add(CONDSTORE)
    view = session.selected
    if view is not None:
        view.condstore = True
        await session.untagged(f"OK [HIGHESTMODSEQ {view.highestmodseq}] Highest")


def safe_literal(data: bytes) -> bytes:
    """``data`` as an IMAP literal; NUL, which IMAP4rev1 literals cannot carry, is sent as 0x80."""
    if b"\0" in data:
        data = data.replace(b"\0", b"\x80")
    return b"{%d}\r\n" % len(data) + data


# --------------------------------------------------------------------------- FETCH


def _needs_content(item: FetchItem) -> bool:
    return isinstance(item, BodySection) or item.name in _CONTENT_ITEMS


def _sets_seen(item: FetchItem) -> bool:
    if isinstance(item, BodySection):
        return not item.peek
    return item.name in _SEEN_ITEMS


class StructureCache:
    """ENVELOPE, BODYSTRUCTURE and BODY of recently fetched messages, encoded, by blob key (per process).

    A stored message never changes, so neither do these: a client fetching the same window again, or
    another session fetching the same message, is answered without reading and parsing the file.
    Bounded by bytes, each entry's Python objects counted with its encoded items (ENTRY_OVERHEAD: about
    a third of a lab report's entry); the least recently used go first."""

    ITEMS = frozenset({"ENVELOPE", "BODYSTRUCTURE", "BODY"})
    ENTRY_OVERHEAD = 512  # the entry's dict, its three bytes objects, the key and the LRU link

    def __init__(self, max_bytes: int = 4 << 20) -> None:
        self._entries: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        self._bytes = 0
        self._max = max_bytes
        self._lock = threading.Lock()  # one event loop per worker, but tests run several in threads

    def get(self, key: str) -> dict[str, bytes] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: str, structure: MessageStructure) -> dict[str, bytes]:
        entry = {"ENVELOPE": b"ENVELOPE " + wire.encode(structure.envelope()),
                 "BODYSTRUCTURE": b"BODYSTRUCTURE " + wire.encode(structure.bodystructure(extensible=True)),
                 "BODY": b"BODY " + wire.encode(structure.bodystructure(extensible=False))}
        with self._lock:
            if key not in self._entries:
                self._entries[key] = entry
                self._bytes += self._weight(entry)
                while self._bytes > self._max and self._entries:
                    _, dropped = self._entries.popitem(last=False)
                    self._bytes -= self._weight(dropped)
        return entry

    def _weight(self, entry: dict[str, bytes]) -> int:
        return self.ENTRY_OVERHEAD + sum(map(len, entry.values()))


STRUCTURES = StructureCache()


def _cached_only(items: tuple[FetchItem, ...]) -> bool:
    """Whether the cache can answer every content item of this FETCH (no section, no whole message)."""
    return all(not _needs_content(item) or (not isinstance(item, BodySection) and item.name in StructureCache.ITEMS)
               for item in items)


_HEADER_SECTIONS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})


def _header_only(items: tuple[FetchItem, ...]) -> bool:
    """Whether every content item of this FETCH is in the message's own header (ENVELOPE,
    BODY[HEADER], BODY[HEADER.FIELDS ...], RFC822.HEADER): the MIME tree need not be parsed."""
    for item in items:
        if isinstance(item, BodySection):
            if item.parts or item.text not in _HEADER_SECTIONS:
                return False
        elif item.name in _CONTENT_ITEMS and item.name not in ("ENVELOPE", "RFC822.HEADER"):
            return False
    return True


def _item(item: FetchItem, meta: MessageMeta, structure: MessageStructure | None, recent: set[int],
          cached: dict[str, bytes] | None = None) -> bytes:
    """One ``label SP value`` of a FETCH response."""
    if isinstance(item, BodySection):
        assert structure is not None
        data = structure.section(item.parts, item.text, item.fields)
        if item.partial is not None:
            origin, count = item.partial
            data = data[origin : origin + count]
        return item.label().encode("utf-8", "surrogateescape") + b" " + safe_literal(data)
    name = item.name
    if name == "UID":
        return b"UID %d" % meta.uid
    if name == "FLAGS":
        return b"FLAGS " + wire.encode(flag_list(meta.flags, recent, meta.uid))
    if name == "INTERNALDATE":
        return b"INTERNALDATE " + wire.quoted(wire.format_internaldate(meta.internaldate))
    if name == "RFC822.SIZE":
        return b"RFC822.SIZE %d" % meta.size
    if name == "MODSEQ":
        return b"MODSEQ (%d)" % meta.modseq
    if name == "EMAILID":
        return b"EMAILID (%s)" % email_id(meta.blob_key).encode()
    if name == "THREADID":
        return b"THREADID NIL"
    if name == "SAVEDATE":
        if meta.saved_at is None:
            return b"SAVEDATE NIL"
        return b"SAVEDATE " + wire.quoted(wire.format_internaldate(meta.saved_at))
    if cached is not None and name in cached:
        return cached[name]
    assert structure is not None
    if name == "ENVELOPE":
        return b"ENVELOPE " + wire.encode(structure.envelope())
    if name == "BODYSTRUCTURE":
        return b"BODYSTRUCTURE " + wire.encode(structure.bodystructure(extensible=True))
    if name == "BODY":
        return b"BODY " + wire.encode(structure.bodystructure(extensible=False))
    if name == "RFC822":
        return b"RFC822 " + safe_literal(structure.raw)
    if name == "RFC822.HEADER":
        return b"RFC822.HEADER " + safe_literal(structure.header_bytes())
    if name == "RFC822.TEXT":
        return b"RFC822.TEXT " + safe_literal(structure.text_bytes())
    raise ValueError(f"unknown fetch item {name}")


async def _send(session: Session, pieces: list[bytes]) -> None:
    """Write one untagged response made of ``pieces`` (literals included)."""
    if sum(len(piece) for piece in pieces) <= _JOIN_LIMIT:
        await session.write(b"".join(pieces))
        return
    for piece in pieces:
        await session.write(piece)


def _load(read: Callable[[str], bytes], metas: list[MessageMeta], header_only: bool) -> list[MessageStructure | None]:
    """The parsed messages (in a thread: one hand-off for several), None for one whose file is gone
    (expunged by another session meanwhile); only their headers when that is all the FETCH needs."""
    parse = MessageStructure.parse_header if header_only else MessageStructure.parse
    loaded: list[MessageStructure | None] = []
    for meta in metas:
        try:
            loaded.append(parse(read(meta.blob_key)))
        except OSError:
            log.info("message file %s is gone (expunged meanwhile?)", meta.blob_key)
            loaded.append(None)
    return loaded


def _chunks(uids: list[int], metas: dict[int, MessageMeta]) -> Iterator[list[int]]:
    """``uids`` in runs whose message files are loaded together: up to LOAD_BYTES (or one message)."""
    chunk: list[int] = []
    size = 0
    for uid in uids:
        meta = metas.get(uid)
        weight = meta.size if meta is not None else 0
        if chunk and (size + weight > LOAD_BYTES or len(chunk) >= LOAD_MESSAGES):
            yield chunk
            chunk, size = [], 0
        chunk.append(uid)
        size += weight
    if chunk:
        yield chunk


@handles(Fetch, SELECTED_ONLY)
async def fetch(session: Session, command: Fetch) -> Reply:
    view = session.selected
    assert view is not None
    if out_of_range(view, command.sequence_set, command.uid):
        return bad(INVALID_SEQUENCE)
    items = command.response_items()
    if command.changed_since is not None or _MODSEQ in items:
        await enable_condstore(session)
    # RFC 3501 7.4.1: no EXPUNGE while answering a FETCH by sequence numbers.
    await session.refresh(expunges_allowed=command.uid)
    view = session.selected
    assert view is not None
    folders = session.ctx.store.folders
    requested = selected_uids(view, command.sequence_set, command.uid)
    metas: dict[int, MessageMeta] = {}
    for batch in batches(requested):
        metas.update(await session.read(folders.metas, view.folder.id, batch, rows=len(batch)))
    if _SAVEDATE in items:
        metas = await session.read(folders.with_saved_dates, view.folder.id, metas, rows=len(metas))
    # A message the view still numbers but another session expunged (the EXPUNGE waits for a command
    # that may carry it) has no data left but its UID (RFC 2180 4.1.2: the rest, then NO).
    uid_only = set(items) <= {FetchAttribute("UID")}
    uids = requested
    if command.changed_since is not None:
        uids = [uid for uid in uids if uid in metas and metas[uid].modseq > command.changed_since]

    await session.learn_keywords(metas.values())  # RFC 3501 7.2.6: FLAGS names a keyword before FETCH shows it
    seen_now: set[int] = set()
    if not view.readonly and any(_sets_seen(item) for item in items):
        unseen = [uid for uid in uids if uid in metas and SEEN not in metas[uid].flags]
        for batch in batches(unseen):
            changed, _ = await session.run(folders.store_flags, view.folder.id, batch, FlagMode.ADD, [SEEN])
            view.remember(changed)
            metas.update((meta.uid, meta) for meta in changed)
            seen_now.update(meta.uid for meta in changed)

    # RFC 3501 6.4.5: FLAGS goes with a message whose \Seen this FETCH set; RFC 7162 3.2.4: so do UID
    # and MODSEQ once the session is CONDSTORE-aware.
    implied: list[FetchItem] = []
    if seen_now:
        implied = [FetchAttribute("FLAGS")]
        if condstore_active(session):
            implied += [FetchAttribute("UID"), _MODSEQ]
        implied = [item for item in implied if item not in items]

    content = any(_needs_content(item) for item in items)
    cacheable = content and _cached_only((*items, *implied))
    header_only = not cacheable and _header_only(items)
    missing = 0
    for chunk in _chunks(uids, metas) if content else [uids]:
        structures: dict[int, MessageStructure | None] = {}
        cached: dict[int, dict[str, bytes]] = {}
        if content:
            present = [metas[uid] for uid in chunk if uid in metas and view.seq_of(uid) is not None]
            if cacheable:
                cached = {meta.uid: entry for meta in present if (entry := STRUCTURES.get(meta.blob_key))}
                present = [meta for meta in present if meta.uid not in cached]
            loaded = await session.run(_load, folders.read, present, header_only) if present else []
            structures = {meta.uid: structure for meta, structure in zip(present, loaded, strict=True)}
            if cacheable:  # what a section FETCH parsed is not encoded for the cache: it would cost more than it saves
                for meta, structure in zip(present, loaded, strict=True):
                    if structure is not None:
                        cached[meta.uid] = STRUCTURES.put(meta.blob_key, structure)
        for uid in chunk:
            seq = view.seq_of(uid)
            if seq is None:
                continue
            meta = metas.get(uid)
            if meta is None:
                if uid_only:
                    await session.untagged(b"%d FETCH (UID %d)" % (seq, uid))
                else:
                    missing += 1
                continue
            structure = structures.get(uid)
            if content and structure is None and uid not in cached:
                missing += 1
                continue
            wanted = (*items, *implied) if uid in seen_now else items
            pieces = [b"* %d FETCH (" % seq]
            for index, item in enumerate(wanted):
                if index:
                    pieces.append(b" ")
                pieces.append(_item(item, meta, structure, view.recent, cached.get(uid)))
            pieces.append(b")\r\n")
            await _send(session, pieces)
    if missing:
        # RFC 2180 4.1.2: the data of a message expunged meanwhile cannot be returned.
        return no("Some of the requested messages no longer exist", "EXPUNGEISSUED")
    return ok("FETCH completed")
