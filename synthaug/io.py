"""Atomic file and folder writes: a reader sees the old content or the new, never half of either."""

from __future__ import annotations

import errno
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from synthaug.errors import EnvironmentFailure


def environment_error(path: Path, exc: OSError) -> EnvironmentFailure:
    if exc.errno == errno.ENOSPC:
        return EnvironmentFailure(f"{path}: the disk is full; free some space and rerun with --resume")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return EnvironmentFailure(f"{path}: not writable ({exc.strerror}); choose another folder with --out")
    return EnvironmentFailure(f"{path}: cannot write ({exc.strerror or exc})")


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn OS errors while writing ``path`` into one-line environment failures."""
    try:
        yield
    except OSError as exc:
        raise environment_error(Path(path), exc) from None


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` in one rename.

    On any failure (an exception, Ctrl-C) the temporary folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        tmp.chmod(0o777 & ~_UMASK)
    try:
        with writing(path):
            yield tmp
        with writing(path):
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_digest(path: Path) -> str:
    """The first 16 hex digits of a file's SHA-256, read 1 MB at a time. Remembered for the process while the
    file's inode, size and modification time stay the same: ``synthaug run`` names a latent-text base (gigabytes)
    at training, generation and evaluation, and reads it once."""
    st = os.stat(path)
    return _digest(str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _digest(path: str, inode: int, size: int, mtime_ns: int) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def model_digest(model_dir: Path) -> str:
    """A digest of a saved model's weights, its safetensors files (the pixel UNet's; the latent-text backbone's
    LoRA and class tokens, digested together): names what was sampled from."""
    digests = [file_digest(f) for f in sorted(Path(model_dir).rglob("*.safetensors"))]
    if len(digests) <= 1:
        return "".join(digests)
    import hashlib

    return hashlib.sha256("-".join(digests).encode()).hexdigest()[:16]
