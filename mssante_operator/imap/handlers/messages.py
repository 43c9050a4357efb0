"""The message commands other than FETCH: STORE, SEARCH, COPY, MOVE, EXPUNGE, UID EXPUNGE, CLOSE,
UNSELECT, CHECK and APPEND (RFC 3501 6.3.11, 6.4; UIDPLUS RFC 4315; MOVE RFC 6851; UNSELECT RFC 3691;
CONDSTORE RFC 7162; APPENDLIMIT RFC 7889).

Sequence numbers always refer to the session's view (``session.selected``); the view is changed
here only where the command itself removes messages (EXPUNGE, MOVE), with the EXPUNGE responses
that tell the client, and updated with the session's own flag changes so that they are not
announced twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from mssante_base.message.headers import summarise

from ...store.facade import NewMessage
from ...store.folders import FlagMode, Folder, FolderError, Folders, MessageMeta, NoSuchFolder
from .. import wire
from ..commands import (
    And,
    Append,
    AppendedMessage,
    Check,
    Close,
    Copy,
    Expunge,
    ModSeqKey,
    Move,
    Not,
    Or,
    SavedDateKey,
    Search,
    SearchKey,
    StoreMode,
    Unselect,
)
from ..commands import Store as StoreCommand
from ..message import MessageStructure
from ..search import Candidate, matches, needs_content
from ..sequence import SequenceSet
from ..session import LOGGED_IN, SELECTED_ONLY, MailboxRef, Reply, Session, bad, flag_list, handles, no, ok
from .fetch import (
    INVALID_SEQUENCE,
    batches,
    condstore_active,
    enable_condstore,
    out_of_range,
    selected_uids,
)

READ_ONLY = "The mailbox is read-only"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FLAG_MODES = {StoreMode.REPLACE: FlagMode.REPLACE, StoreMode.ADD: FlagMode.ADD, StoreMode.REMOVE: FlagMode.REMOVE}


async def announce_expunged(session: Session, uids: Iterable[int]) -> None:
    """Remove messages from the view, with one EXPUNGE response each, highest sequence number first
    (an EXPUNGE renumbers only the messages after it, so every number sent is right when sent)."""
    view = session.selected
    assert view is not None
    for seq in view.forget(uids):
        await session.untagged(f"{seq} EXPUNGE")


# --------------------------------------------------------------------------- STORE


@handles(StoreCommand, SELECTED_ONLY)
async def store(session: Session, command: StoreCommand) -> Reply:
    view = session.selected
    assert view is not None
    if out_of_range(view, command.sequence_set, command.uid):
        return bad(INVALID_SEQUENCE)
    if view.readonly:
        return no(READ_ONLY)
    if command.unchanged_since is not None:
        await enable_condstore(session)
    await session.refresh(expunges_allowed=command.uid)  # RFC 3501 7.4.1: none during a STORE by number
    uids = selected_uids(view, command.sequence_set, command.uid)
    if not uids:
        return ok("STORE completed")
    changed: list[MessageMeta] = []
    failed: list[int] = []
    for batch in batches(uids):
        done, refused = await session.run(session.ctx.store.folders.store_flags, view.folder.id, batch,
                                          _FLAG_MODES[command.mode], command.flags, command.unchanged_since)
        view.remember(done)
        changed += done
        failed += refused
    condstore = condstore_active(session)
    metas = {meta.uid: meta for meta in changed}
    changed_uids = set(metas)
    failed_uids = set(failed)
    if not command.silent:  # the flags of the messages this STORE left as they were, to echo them too
        unchanged = [uid for uid in uids if uid not in metas and uid not in failed_uids]
        for batch in batches(unchanged):
            metas.update(await session.read(session.ctx.store.folders.metas, view.folder.id, batch, rows=len(batch)))
    await session.learn_keywords(metas.values())  # before the FETCH responses that show them
    for uid in uids:
        seq = view.seq_of(uid)
        if seq is None or uid in failed_uids:
            continue
        # RFC 3501 6.4.6: the new flags of every message, as if fetched, unless .SILENT; RFC 7162 3.2:
        # with CONDSTORE, the new MODSEQ of every changed message, even with .SILENT.
        meta = metas.get(uid)
        if meta is None or (command.silent and not (condstore and uid in changed_uids)):
            continue
        items: list[object] = []
        if command.uid or condstore:
            items += [wire.Atom("UID"), uid]
        if not command.silent:
            items += [wire.Atom("FLAGS"), flag_list(meta.flags, view.recent, uid)]
        if condstore:
            items += [wire.Atom("MODSEQ"), [meta.modseq]]
        await session.untagged(b"%d FETCH " % seq + wire.encode(items))
    if failed:
        numbers = failed if command.uid else sorted(seq for uid in failed if (seq := view.seq_of(uid)) is not None)
        if numbers:
            return ok("Conditional STORE failed for some messages", f"MODIFIED {SequenceSet.from_numbers(numbers)}")
    return ok("STORE completed")


# --------------------------------------------------------------------------- SEARCH


def _mentions(key: SearchKey, kind: type) -> bool:
    """Whether ``key`` holds a key of type ``kind`` anywhere (MODSEQ enables CONDSTORE, SAVED* needs save dates)."""
    if isinstance(key, kind):
        return True
    if isinstance(key, And):
        return any(_mentions(k, kind) for k in key.keys)
    if isinstance(key, Or):
        return _mentions(key.left, kind) or _mentions(key.right, kind)
    if isinstance(key, Not):
        return _mentions(key.key, kind)
    return False


def _loader(folders: Folders, blob_key: str) -> Callable[[], MessageStructure]:
    def load() -> MessageStructure:
        if not blob_key:  # a ghost: expunged by another session
            return MessageStructure.parse(b"")
        try:
            return MessageStructure.parse(folders.read(blob_key))
        except OSError:  # expunged meanwhile: an empty message matches no text key
            return MessageStructure.parse(b"")

    return load


def _ghost(uid: int) -> MessageMeta:
    return MessageMeta(uid=uid, modseq=0, flags=frozenset(), internaldate=_EPOCH, size=0, blob_key="")


def _evaluate(key: SearchKey, candidates: list[Candidate]) -> list[Candidate]:
    return [candidate for candidate in candidates if matches(key, candidate)]


@handles(Search, SELECTED_ONLY)
async def search(session: Session, command: Search) -> Reply:
    view = session.selected
    assert view is not None
    modseq = _mentions(command.key, ModSeqKey)
    if modseq:
        await enable_condstore(session)
    await session.refresh(expunges_allowed=command.uid)  # RFC 3501 7.4.1: none during a SEARCH by number
    folders = session.ctx.store.folders
    exists, max_uid = view.exists, view.max_uid
    metas = await session.read(folders.metas, view.folder.id, view.uids, rows=len(view.uids))
    if _mentions(command.key, SavedDateKey):
        metas = await session.read(folders.with_saved_dates, view.folder.id, metas, rows=len(metas))
    # A message expunged by another session but still numbered in this view is searched as an
    # empty message without flags: ALL and sequence sets still count it, as the client expects.
    now = datetime.now(UTC)
    candidates = [
        Candidate(seq, meta, uid in view.recent, exists, max_uid, _loader(folders, meta.blob_key), now)
        for seq, uid in enumerate(view.uids, start=1)
        for meta in (metas.get(uid) or _ghost(uid),)
    ]
    if needs_content(command.key):
        found = await session.run(_evaluate, command.key, candidates)
    else:
        found = _evaluate(command.key, candidates)
    numbers = [c.meta.uid if command.uid else c.seq for c in found]
    highest = max(c.meta.modseq for c in found) if modseq and found else None  # RFC 7162 3.1.5
    if command.returns is None:
        line = "SEARCH" + "".join(f" {n}" for n in numbers)
        if highest is not None:
            line += f" (MODSEQ {highest})"
    else:
        line = esearch_line(command.tag, command.uid, command.returns, numbers, highest)
    await session.untagged(line)
    return ok("SEARCH completed")


def esearch_line(tag: str, uid: bool, returns: tuple[str, ...], numbers: list[int], highest: int | None) -> str:
    """An ESEARCH response (RFC 4731 3.1) for ``numbers`` (ascending): MIN, MAX and ALL only when something
    matched, COUNT always when asked; MODSEQ (RFC 7162 3.1.5) the highest of the messages found."""
    parts = ["ESEARCH", f"(TAG {wire.quoted(tag).decode()})"]
    if uid:
        parts.append("UID")
    if numbers:
        values = {"MIN": str(numbers[0]), "MAX": str(numbers[-1]), "ALL": str(SequenceSet.from_numbers(numbers))}
        parts += [f"{option} {values[option]}" for option in returns if option in values]
    if "COUNT" in returns:
        parts.append(f"COUNT {len(numbers)}")
    if highest is not None:
        parts.append(f"MODSEQ {highest}")
    return " ".join(parts)


# --------------------------------------------------------------------------- COPY, MOVE


async def _target(session: Session, mailbox: str) -> tuple[MailboxRef, Folder] | Reply:
    """The folder a COPY, MOVE or APPEND goes to, or the NO to answer: [TRYCREATE] when the client
    could create it (RFC 3501 6.3.11, 6.4.7)."""
    ref = session.resolve(mailbox)
    if ref is None or not ref.folder:
        return no("No such mailbox")
    folder = await session.read(session.ctx.store.folders.get, ref.address, ref.folder)
    if folder is None:
        return no("No such mailbox", "TRYCREATE")
    return ref, folder


async def _copy(session: Session, command: Copy | Move, move: bool) -> Reply:
    view = session.selected
    assert view is not None
    if out_of_range(view, command.sequence_set, command.uid):
        return bad(INVALID_SEQUENCE)
    if move and view.readonly:
        return no(READ_ONLY)
    found = await _target(session, command.mailbox)
    if isinstance(found, Reply):
        return found
    _, target = found
    await session.refresh(expunges_allowed=command.uid)
    uids = selected_uids(view, command.sequence_set, command.uid)
    name = command.name
    if not uids:
        return ok(f"{name} completed: no messages")
    uidvalidity = target.uidvalidity
    pairs: list[tuple[int, int]] = []
    failure: Reply | None = None
    for batch in batches(uids):
        try:
            uidvalidity, done = await session.run(session.ctx.store.folders.copy, view.folder.id, batch, target.id,
                                                  move=move)
        except NoSuchFolder:
            failure = no("No such mailbox", "TRYCREATE")
            break
        except FolderError as error:
            failure = no(str(error))
            break
        pairs += done
    code = None
    if pairs:
        code = (f"COPYUID {uidvalidity} {SequenceSet.from_numbers(old for old, _ in pairs)} "
                f"{SequenceSet.from_numbers(new for _, new in pairs)}")
    if move and code is not None:
        # RFC 6851 3.3: COPYUID in an untagged OK, then the EXPUNGE responses, then the tagged OK.
        await session.untagged(f"OK [{code}] Moved")
        await announce_expunged(session, [old for old, _ in pairs])
    if failure is not None:
        return failure
    if code is None:  # all expunged meanwhile
        return ok(f"{name} completed: no messages")
    if target.id == view.folder.id:  # the new copies: EXISTS now (a MOVE has already sent its EXPUNGEs)
        await session.refresh(expunges_allowed=move or command.uid)
    return ok("MOVE completed") if move else ok("COPY completed", code)


@handles(Copy, SELECTED_ONLY)
async def copy(session: Session, command: Copy) -> Reply:
    return await _copy(session, command, move=False)


@handles(Move, SELECTED_ONLY)
async def move(session: Session, command: Move) -> Reply:
    return await _copy(session, command, move=True)


# --------------------------------------------------------------------------- EXPUNGE, CLOSE, UNSELECT, CHECK


@handles(Expunge, SELECTED_ONLY)
async def expunge(session: Session, command: Expunge) -> Reply:
    view = session.selected
    assert view is not None
    if view.readonly:
        return no(READ_ONLY)
    await session.refresh()  # the client learns of \Deleted flags and messages others set or added
    uids: list[int] | None = None
    if command.uid:
        assert command.sequence_set is not None
        uids = selected_uids(view, command.sequence_set, uid=True)
        if not uids:
            return ok("EXPUNGE completed")
    if uids is None:
        removed = await session.run(session.ctx.store.folders.expunge, view.folder.id)
    else:
        removed = []
        for batch in batches(uids):
            removed += await session.run(session.ctx.store.folders.expunge, view.folder.id, batch)
    await announce_expunged(session, removed)
    return ok("EXPUNGE completed")


@handles(Close, SELECTED_ONLY)
async def close(session: Session, command: Close) -> Reply:
    view = session.selected
    assert view is not None
    if not view.readonly:  # RFC 3501 6.4.2: expunge silently, no EXPUNGE responses
        with contextlib.suppress(FolderError):  # the folder was deleted meanwhile: nothing to expunge
            await session.run(session.ctx.store.folders.expunge, view.folder.id)
    await session.unselect()
    return ok("CLOSE completed")


@handles(Unselect, SELECTED_ONLY)
async def unselect(session: Session, command: Unselect) -> Reply:
    await session.unselect()
    return ok("UNSELECT completed")


@handles(Check, SELECTED_ONLY)
async def check(session: Session, command: Check) -> Reply:
    await session.refresh()
    return ok("CHECK completed")


# --------------------------------------------------------------------------- APPEND


def _clean(text: str) -> str:
    return text.replace("\0", "")  # PostgreSQL text cannot hold NUL


def _append(folders: Folders, address: str, name: str, appended: tuple[AppendedMessage, ...]) -> tuple[int, list[int]]:
    """Summarise and store the messages, all or none (in a thread: headers of any size are parsed here)."""
    now = datetime.now(UTC)
    messages = []
    for item in appended:
        summary = summarise(item.message)
        message = NewMessage(raw=item.message, message_id=_clean(summary.message_id) if summary.message_id else None,
                             from_addr=_clean(summary.from_text), subject=_clean(summary.subject),
                             authentication_results="", received_at=now)
        messages.append((message, item.flags, item.internal_date or now))
    return folders.append_many(address, name, messages)


@handles(Append, LOGGED_IN)
async def append(session: Session, command: Append) -> Reply:
    found = await _target(session, command.mailbox)
    if isinstance(found, Reply):
        return found
    ref, target = found
    # RFC 3502: one refused message refuses the whole command.
    if any(len(item.message) > session.ctx.append_limit for item in command.messages):
        return no(f"The message is larger than {session.ctx.append_limit} octets", "TOOBIG")
    if not all(item.message for item in command.messages):
        return no("Empty messages cannot be stored")
    try:
        uidvalidity, uids = await session.run(_append, session.ctx.store.folders, ref.address, ref.folder,
                                              command.messages)
    except NoSuchFolder:
        return no("No such mailbox", "TRYCREATE")
    view = session.selected
    if view is not None and view.folder.id == target.id:
        await session.refresh()  # the new messages: EXISTS, RECENT
    return ok("APPEND completed", f"APPENDUID {uidvalidity} {SequenceSet.from_numbers(uids)}")
