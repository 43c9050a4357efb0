"""Folder commands: SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, STATUS.

Names travel in modified UTF-7 on the wire and as Unicode everywhere else. A user sees their own
folders at the top level and, under ``Shared/<address>/``, the ORG mailboxes they are a delegate
of; nobody else's mailbox is visible, not even by its name in an error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...store.folders import DELIMITER, INBOX, SPECIAL_USES, Folder, FolderError, FolderExists, NoSuchFolder
from .. import utf7, wire
from ..commands import (
    Create,
    Delete,
    List,
    Lsub,
    Rename,
    Select,
    Status,
    Subscribe,
    UnreadableName,
    Unsubscribe,
)
from ..object_ids import mailbox_id
from ..session import LOGGED_IN, SHARED_PREFIX, MailboxRef, Reply, Session, bad, handles, no, ok


@dataclass(frozen=True)
class Listed:
    """One LIST line: the client's name and its attributes."""

    name: str
    attributes: tuple[str, ...]


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A LIST pattern as a regex: ``*`` matches anything, ``%`` anything but the delimiter; a
    leading ``inbox`` in any case names INBOX (RFC 3501 5.1)."""
    head, sep, rest = pattern.partition(DELIMITER)
    if head.upper() == INBOX:
        pattern = INBOX + sep + rest
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "%":
            parts.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def readable_patterns(reference: str, patterns: tuple[str, ...]) -> list[str]:
    """The patterns that can match a name: one that is not valid modified UTF-7 (or under such a
    reference) matches nothing, and LIST answers an empty OK, as Dovecot does."""
    if isinstance(reference, UnreadableName):
        return []
    return [pattern for pattern in patterns if not isinstance(pattern, UnreadableName)]


def _quoted_name(name: str) -> bytes:
    return wire.encode(utf7.encode_mailbox(name))


async def _folder(session: Session, ref: MailboxRef) -> Folder | None:
    if not ref.address or not ref.folder:
        return None
    return await session.read(session.ctx.store.folders.get, ref.address, ref.folder)


async def _visible_folders(session: Session) -> list[Listed]:
    """Every name this user may see, with its attributes (CHILDREN, SPECIAL-USE, \\Noselect)."""
    assert session.principal is not None
    store = session.ctx.store.folders
    entries: dict[str, tuple[str, ...]] = {}
    accounts = [session.principal.login, *session.shared_addresses()]
    for address in accounts:
        for folder in await session.read(store.list, address):
            # Only the user's own folders carry special uses: a client must not file its Sent mail in a
            # service's Sent folder.
            own = address == session.principal.login
            attributes = (folder.special_use,) if folder.special_use and own else ()
            entries[session.client_name(address, folder.name)] = attributes
    if len(accounts) > 1:
        entries[SHARED_PREFIX] = ("\\Noselect",)
        for address in accounts[1:]:
            entries[session.client_name(address, "")] = ("\\Noselect",)
    for name in list(entries):  # parents that no longer exist as folders (a parent was deleted)
        parts = name.split(DELIMITER)
        for depth in range(1, len(parts)):
            entries.setdefault(DELIMITER.join(parts[:depth]), ("\\Noselect",))
    listed = []
    for name, attributes in sorted(entries.items()):
        has_children = any(other.startswith(name + DELIMITER) for other in entries)
        listed.append(Listed(name, (*attributes, "\\HasChildren" if has_children else "\\HasNoChildren")))
    return listed


@handles(Select, LOGGED_IN)
async def select(session: Session, command: Select) -> Reply:
    await session.unselect()  # a failed SELECT leaves no folder selected (RFC 3501 6.3.1)
    ref = session.resolve(command.mailbox)
    folder = await _folder(session, ref) if ref is not None else None
    if folder is None:
        return no("no such mailbox", "NONEXISTENT")
    view = await session.select(folder, command.readonly, command.condstore)
    if command.condstore:
        session.enabled.add("CONDSTORE")
    await session.announce_flags()
    await session.untagged(f"{view.exists} EXISTS")
    await session.untagged(f"{len(view.recent)} RECENT")
    unseen = view.seq_of(view.first_unseen) if view.first_unseen is not None else None
    if unseen is not None:
        await session.untagged(f"OK [UNSEEN {unseen}] first unseen message")
    await session.untagged(f"OK [UIDVALIDITY {view.folder.uidvalidity}] UIDs valid")
    await session.untagged(f"OK [UIDNEXT {view.uidnext}] predicted next UID")
    await session.untagged(f"OK [HIGHESTMODSEQ {view.highestmodseq}] highest mod-sequence")
    await session.untagged(f"OK [MAILBOXID ({mailbox_id(view.folder)})] Ok")
    mode = "READ-ONLY" if view.readonly else "READ-WRITE"
    return ok(f"{command.name} completed", mode)


def _writable_ref(session: Session, name: str) -> MailboxRef | None:
    ref = session.resolve(name)
    return ref if ref is not None and ref.address and ref.folder else None


@handles(Create, LOGGED_IN)
async def create(session: Session, command: Create) -> Reply:
    ref = _writable_ref(session, command.mailbox)
    if ref is None:
        return no("mailboxes cannot be created there", "CANNOT")
    if len(command.special_use) > 1 or any(use not in SPECIAL_USES for use in command.special_use):
        return no("unsupported special-use attribute", "USEATTR")
    try:
        folder = await session.run(session.ctx.store.folders.create, ref.address, ref.folder,
                                   command.special_use[0] if command.special_use else None)
    except FolderExists:
        return no("mailbox already exists", "ALREADYEXISTS")
    except FolderError as exc:
        return no(str(exc), "USEATTR" if "use" in str(exc) else "CANNOT")
    return ok("CREATE completed", f"MAILBOXID ({mailbox_id(folder)})")



@handles(Delete, LOGGED_IN)
async def delete(session: Session, command: Delete) -> Reply:
    ref = _writable_ref(session, command.mailbox)
    if ref is None:
        return no("no such mailbox", "NONEXISTENT")
    try:
        await session.run(session.ctx.store.folders.delete, ref.address, ref.folder)
    except NoSuchFolder:
        return no("no such mailbox", "NONEXISTENT")
    except FolderError as exc:
        return no(str(exc), "CANNOT")
    return ok("DELETE completed")


@handles(Rename, LOGGED_IN)
async def rename(session: Session, command: Rename) -> Reply:
    old, new = _writable_ref(session, command.mailbox), _writable_ref(session, command.new_name)
    if old is None:
        return no("no such mailbox", "NONEXISTENT")
    if new is None or new.address != old.address:
        return no("a mailbox can only be renamed within the same account", "CANNOT")
    try:
        await session.run(session.ctx.store.folders.rename, old.address, old.folder, new.folder)
    except NoSuchFolder:
        return no("no such mailbox", "NONEXISTENT")
    except FolderExists:
        return no("the new name already exists", "ALREADYEXISTS")
    except FolderError as exc:
        return no(str(exc), "CANNOT")
    return ok("RENAME completed")


@handles(Subscribe, LOGGED_IN)
async def subscribe(session: Session, command: Subscribe) -> Reply:
    assert session.principal is not None
    await session.run(session.ctx.store.folders.subscribe, session.principal.login, command.mailbox)
    return ok("SUBSCRIBE completed")


@handles(Unsubscribe, LOGGED_IN)
async def unsubscribe(session: Session, command: Unsubscribe) -> Reply:
    assert session.principal is not None
    await session.run(session.ctx.store.folders.unsubscribe, session.principal.login, command.mailbox)
    return ok("UNSUBSCRIBE completed")


@handles(List, LOGGED_IN)
async def list_(session: Session, command: List) -> Reply:
    if command.patterns == ("",):  # the delimiter and the root of the reference (RFC 3501 6.3.8)
        await session.untagged(b'LIST (\\Noselect) "/" ""')
        return ok("LIST completed")
    regexes = [pattern_regex(command.reference + p) for p in readable_patterns(command.reference, command.patterns)]
    special_only = "SPECIAL-USE" in command.selection_options
    for entry in await _visible_folders(session):
        if not any(r.fullmatch(entry.name) for r in regexes):
            continue
        if special_only and not any(a in SPECIAL_USES for a in entry.attributes):
            continue
        attributes = " ".join(entry.attributes)
        await session.untagged(f"LIST ({attributes}) \"{DELIMITER}\" ".encode() + _quoted_name(entry.name))
    return ok("LIST completed")


@handles(Lsub, LOGGED_IN)
async def lsub(session: Session, command: Lsub) -> Reply:
    assert session.principal is not None
    if not readable_patterns(command.reference, (command.pattern,)):
        return ok("LSUB completed")
    pattern = command.reference + command.pattern
    regex = pattern_regex(pattern)
    visible = {entry.name for entry in await _visible_folders(session)}
    subscribed = await session.read(session.ctx.store.folders.subscriptions, session.principal.login)
    answer: dict[str, str] = {}
    for name in subscribed:
        if regex.fullmatch(name):
            answer[name] = "" if name in visible else "\\Noselect"
        elif "%" in pattern:
            # RFC 3501 6.3.9: with "%", the unsubscribed parent of a subscribed name that "%" stops
            # short of is returned, marked \Noselect.
            parts = name.split(DELIMITER)
            for depth in range(1, len(parts)):
                parent = DELIMITER.join(parts[:depth])
                if parent not in subscribed and regex.fullmatch(parent):
                    answer.setdefault(parent, "\\Noselect")
    for name, attributes in sorted(answer.items()):
        await session.untagged(f"LSUB ({attributes}) \"{DELIMITER}\" ".encode() + _quoted_name(name))
    return ok("LSUB completed")


@handles(Status, LOGGED_IN)
async def status(session: Session, command: Status) -> Reply:
    ref = session.resolve(command.mailbox)
    folder = await _folder(session, ref) if ref is not None else None
    if folder is None:
        return no("no such mailbox", "NONEXISTENT")
    wanted = {item.upper() for item in command.items}
    current = await session.read(session.ctx.store.folders.status, folder, size="SIZE" in wanted)
    if current is None:
        return no("no such mailbox", "NONEXISTENT")
    values = {
        "MESSAGES": current.messages, "RECENT": current.recent, "UIDNEXT": current.uidnext,
        "UIDVALIDITY": current.uidvalidity, "UNSEEN": current.unseen, "HIGHESTMODSEQ": current.highestmodseq,
        "SIZE": current.size, "APPENDLIMIT": session.ctx.append_limit, "MAILBOXID": [wire.Atom(mailbox_id(folder))],
    }
    items: list[object] = []
    for item in command.items:
        if item.upper() not in values:
            return bad(f"unknown STATUS item {item}")
        items += [wire.Atom(item.upper()), values[item.upper()]]
    await session.untagged(b"STATUS " + _quoted_name(ref.client_name if ref else command.mailbox) + b" "
                           + wire.encode(items))
    return ok("STATUS completed")
