"""Message files on disk, written durably before any database row points at them.

A blob is written once, directly at its final unique path (no rename), then the file and its
directory are fsync'd. A crash before the database commit therefore leaves at worst an unreferenced
file, which `BlobStore.keys_older_than` lets the store collect later; never a visible partial message.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_KEY_RE = re.compile(r"^[0-9a-f]{32}$")
_SHARDS = [f"{i:02x}" for i in range(256)]
CLUSTER_MARKER = "cluster-id"  # in the root: holds the id of the database this directory belongs to


@dataclass(frozen=True)
class BlobFile:
    """What the database records about a written blob."""

    key: str
    size: int
    sha256: str


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """Blob files under `root/<first two hex digits of key>/<key>`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._create_shards()

    def _create_shards(self) -> None:
        """Pre-create every shard directory once, durably, so writes never race on a mkdir."""
        if all((self.root / shard).is_dir() for shard in _SHARDS):
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for shard in _SHARDS:
            (self.root / shard).mkdir(exist_ok=True, mode=0o700)
        _fsync_dir(self.root)
        _fsync_dir(self.root.parent)

    def path(self, key: str) -> Path:
        if not _KEY_RE.match(key):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root / key[:2] / key

    def write(self, data: bytes) -> BlobFile:
        """Write `data` to a new blob and make it durable (file and directory entry) before returning."""
        key = uuid.uuid4().hex
        path = self.path(key)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        _fsync_dir(path.parent)
        return BlobFile(key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest())

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def remove(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def cluster_id(self) -> str | None:
        """The id of the cluster (database) this directory is the blob storage of; None when unmarked."""
        try:
            return (self.root / CLUSTER_MARKER).read_text(encoding="ascii").strip() or None
        except FileNotFoundError:
            return None

    def mark_cluster(self, cluster_id: str) -> None:
        """Mark this directory as the blob storage of ``cluster_id``, durably (file and directory entry)."""
        path = self.root / CLUSTER_MARKER
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, f"{cluster_id}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self.root)

    def keys_older_than(self, seconds: float) -> Iterator[str]:
        """Keys of blob files last modified more than `seconds` ago (candidates for orphan collection)."""
        limit = time.time() - seconds
        for shard in _SHARDS:
            try:
                entries = list(os.scandir(self.root / shard))
            except FileNotFoundError:
                continue
            for entry in entries:
                if _KEY_RE.match(entry.name) and entry.is_file() and entry.stat().st_mtime < limit:
                    yield entry.name
