"""What keeps a run's folder trustworthy on a shared file system: signed marks, safe writes, disk space.

- Marks (a checkpoint complete, a run preempted or finished) are signed with a key of the user's own
  (`$POSTTRAIN_DIST_CACHE/keys/marks.key`, mode 600, made on first use): a mark that someone else wrote
  into a group-writable folder is not taken for one of ours. A complete checkpoint's mark also holds the
  digests of its pickled files (`.pt`, `.pth`, `.bin`, `.pkl`: what resuming unpickles, DeepSpeed's
  with `weights_only=False`), so a file planted or swapped after the run wrote it is never loaded.
- Files are written under a new temporary name (never following a link planted there) and renamed
  into place: a link named report.md makes the run replace the link, not write through it.
- Before a checkpoint or the final model is written, the free space is compared with what will be
  written; a full disk is one line naming the folder, the space needed and the space free.

Standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
from pathlib import Path

PICKLED = (".pt", ".pth", ".bin", ".pkl", ".pickle")


def cache_dir() -> Path:
    return Path(os.environ.get("POSTTRAIN_DIST_CACHE", Path.home() / ".cache" / "posttrain_dist"))


# ---------------------------------------------------------------- signing


def _key() -> bytes:
    path = cache_dir() / "keys" / "marks.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:  # another process made it meanwhile
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
    return path.read_bytes()


def _canonical(payload: dict) -> bytes:
    return json.dumps({k: v for k, v in payload.items() if k != "signature"}, sort_keys=True).encode()


def sign(payload: dict) -> dict:
    """The payload with a `signature` that only this user's key makes."""
    return {**payload, "signature": hmac.new(_key(), _canonical(payload), hashlib.sha256).hexdigest()}


def verify(mark) -> bool:
    if not isinstance(mark, dict) or not isinstance(mark.get("signature"), str):
        return False
    expected = hmac.new(_key(), _canonical(mark), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, mark["signature"])


def read_mark(path: str) -> dict | None:
    """A signed JSON mark, or None when it is absent, unreadable or not signed by this user."""
    try:
        with open(path) as f:
            mark = json.load(f)
    except (OSError, ValueError):
        return None
    return mark if verify(mark) else None


def write_mark(path: str, payload: dict) -> None:
    write_atomically(path, json.dumps(sign(payload)))


def pickled_digests(folder: str) -> dict[str, str]:
    """sha256 of every file in `folder` (recursively) that loading would unpickle, by relative path."""
    digests = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith(PICKLED):
                path = os.path.join(root, name)
                digest = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 22), b""):
                        digest.update(block)
                digests[os.path.relpath(path, folder)] = digest.hexdigest()
    return digests


# ---------------------------------------------------------------- writing


def write_atomically(path: str, text: str) -> None:
    """Write under a new temporary name (O_EXCL, no link followed), flush it to disk, then rename over `path`: the
    file is whole or absent, and a link at `path` is replaced, never written through."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    if os.path.lexists(tmp):
        os.remove(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def links_leaving(folder: str, depth: int = 2) -> list[str]:
    """Symbolic links in `folder` (and its subfolders, `depth` levels) that point outside it."""
    root = os.path.realpath(folder)
    found = []
    if not os.path.isdir(folder):
        return found
    for current, dirs, files in os.walk(folder):
        level = os.path.relpath(current, folder).count(os.sep) + (current != folder)
        for name in dirs + files:
            path = os.path.join(current, name)
            if os.path.islink(path):
                target = os.path.realpath(path)
                if target != root and not target.startswith(root + os.sep):
                    found.append(f"{os.path.relpath(path, folder)} -> {os.readlink(path)}")
        if level >= depth:
            dirs[:] = []
    return found


# ---------------------------------------------------------------- disk space


def gib(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 / 100 else f"{n / 1024**2:.1f} MiB"


def folder_size(folder: str) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def free_space(folder: str) -> int:
    existing = folder
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing) or "."
    return shutil.disk_usage(existing).free


def space_problem(folder: str, needed: int, what: str) -> str | None:
    """None when `needed` bytes (plus 5 %) fit in the free space where `folder` is; else the one-line message."""
    free = free_space(folder)
    if free >= needed * 1.05:
        return None
    return (f"not enough disk space to write {what} in {folder}: it needs about {gib(needed)}, and {gib(free)} is "
            "free. Free some space (older checkpoints, other runs) or set another `output_dir`, then run the same "
            "command again: it resumes from the last complete checkpoint.")


def is_disk_full(error: BaseException) -> bool:
    """Does an exception raised while writing look like a full disk (ENOSPC, or torch's stream errors)?"""
    import errno

    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error)
        if "No space left" in text or "basic_ios::clear" in text or "unexpected pos" in text \
                or "PytorchStreamWriter failed" in text:
            return True
        error = error.__cause__ or error.__context__
    return False
