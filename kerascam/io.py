"""Atomic writes: a kill at any moment leaves either the old file or the new one.

Everything is first written next to its destination (same folder, so the same
file system) under a temporary name, then moved into place with
``os.replace``, which POSIX guarantees to be atomic.
"""

import contextlib
import json
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a temporary path beside ``path``; moves it onto ``path`` on success.

    Works for files and folders (a SavedModel). ``suffix`` keeps an extension
    that the writer insists on (Keras wants ``.keras``).
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    target = os.path.join(tmp, "payload" + suffix)
    try:
        yield target
        if os.path.isdir(target) and os.path.isdir(path):
            # A folder cannot replace a non-empty folder in one rename: move the
            # old one aside first (still intact until the new one is in place).
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old.", dir=parent)
            os.replace(path, os.path.join(old, "payload"))
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_free_space(folder, needed_bytes, what):
    """Raises ``OSError`` (one sentence) if ``folder``'s disk has less than ``needed_bytes`` free.

    Called before long work, so that a full disk is reported at the start
    instead of by a failed save hours later.
    """
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise OSError(
            f"not enough free space in {folder}: {what} need about {needed_bytes / 2**20:,.0f} MiB, "
            f"{free / 2**20:,.0f} MiB free; free some space or choose another folder"
        )


@contextlib.contextmanager
def atomic_file(path, mode="w"):
    """Yields a file opened with ``mode`` ("w" text, "wb" binary) that lands on
    ``path`` whole, flushed to disk, or not at all.

    The file is opened by ``open``, which honours the umask, so it gets the
    same permissions as any other file written here.
    """
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_text(path, text):
    with atomic_file(path) as f:
        f.write(text)


def write_json(path, data):
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
