"""The evaluation's worker processes: started, fed and stopped so that none outlives the evaluation.

Arm runs are independent, so ``evaluation.run_arms`` may hand them to a pool of spawned one-thread
processes (``run_pool``). However the pool ends (all done, a failed run, a dead worker, Ctrl-C, SIGTERM,
the parent SIGKILLed), no worker outlives it:

- a worker ends with its parent, however the parent ends (``_die_with_parent``);
- a terminal's Ctrl-C reaches the whole process group, but workers ignore SIGINT: the parent stops them
  (``_stop_workers``: SIGTERM, then SIGKILL after ``STOP_GRACE_SECONDS``), so no worker prints a traceback;
- a worker that re-runs its parent's script (a script without a main guard) exits with ``REIMPORT_EXIT``,
  and the parent reports one line naming the fix (``WorkerDied``);
- a copy of a stage that Lightning's DDP launcher started for another device (``LOCAL_RANK`` > 0, its
  parent the rank-0 process or torchrun) ends with that parent too (``end_with_launcher``);
- the inputs reach the workers as memory-mapped files in a temporary folder (``_spilled``), removed
  afterwards, or by the next evaluation when the one that wrote it was SIGKILLed.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from synthaug.io import writing

REIMPORT_EXIT = 86  # a worker that finds itself re-running its parent's script exits with this code
STOP_GRACE_SECONDS = 3.0  # a worker still alive this long after SIGTERM gets SIGKILL
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_SPILL_PREFIX = ".arm-inputs-"  # then the pid of the evaluation that spilled


def exit_if_reimported_in_worker() -> None:
    """End this process quietly if it is a spawned worker that is re-running its parent's main script.

    A spawned process imports the parent's ``__main__`` before it runs its task; in a script without
    ``if __name__ == "__main__":`` that import starts synthaug again in every worker: repeated work,
    writes into the same run directory, then nested workers that multiprocessing refuses. Such a worker
    exits with ``REIMPORT_EXIT`` and no traceback; the pool's parent reports one line naming the fix.
    Entry points call this before doing anything.
    """
    # multiprocessing marks a process while it imports its parent's main module (its own
    # _check_not_importing_main reads the same mark).
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise SystemExit(REIMPORT_EXIT)


def _watch_parent(parent_pid: int) -> None:
    parent = multiprocessing.parent_process()
    # The parent's sentinel closes when it ends, on any platform; the pid check also catches a parent
    # whose forked children still hold the sentinel open.
    while os.getppid() == parent_pid and (parent is None or parent.is_alive()):
        time.sleep(0.5)
    os._exit(1)


def _die_with_parent(parent_pid: int, *, prctl: bool = True) -> None:
    """End this worker when its parent ends, however it ends (SIGKILL included): the kernel sends
    SIGKILL on Linux (``PR_SET_PDEATHSIG``); a thread that watches the parent does it anywhere."""
    if prctl and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watching thread still ends the worker
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="synthaug-watch-parent", daemon=True).start()


_watching_launcher = False


def end_with_launcher() -> None:
    """In a process launched for another device (``LOCAL_RANK`` > 0: Lightning's DDP launcher re-runs the
    command once per extra device, torchrun starts every rank), end when the process that launched it ends:
    a SIGKILLed ``synthaug train`` leaves no orphan holding a GPU. The launcher is the parent noted when
    ``synthaug`` was first imported, so a copy whose launcher died while it was still importing ends too.
    Rank 0 and single-process runs are left alone. Every stage calls it on entry; a second call does nothing."""
    import synthaug

    global _watching_launcher
    rank = os.environ.get("LOCAL_RANK", "")
    if _watching_launcher or not rank.isdigit() or int(rank) == 0:
        return
    _watching_launcher = True
    importer, parent = synthaug._PARENT_AT_IMPORT
    _die_with_parent(parent if importer == os.getpid() else os.getppid())  # else forked after the import


def _end_on_sigterm(signum, frame) -> None:
    # Lightning's SIGTERM handler only notes the signal and trains on; it calls the handler it found
    # too, so this one still ends the worker, as SIGTERM's default action would.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _spill(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``folder`` as NAME.npy files for the workers.

    Not pickled into the workers' start: the parent writes that pickle into a pipe it also holds open,
    so a worker that died while starting (a script without a main guard) left it blocked forever once
    the data outgrew the pipe. Memory-mapped, the files are also one copy in memory for all workers.
    """
    with writing(folder):
        for name, array in arrays.items():
            np.save(folder / f"{name}.npy", array)


def _unspill(folder: Path) -> dict[str, np.ndarray]:
    # Copy-on-write: shared pages, and writable arrays (torch warns about read-only ones).
    return {path.name.removesuffix(".npy"): np.load(path, mmap_mode="c") for path in sorted(folder.glob("*.npy"))}


def _remove_orphaned_spills(scratch: Path) -> None:
    """Remove the spill folders of evaluations whose process is gone (SIGKILLed before its cleanup)."""
    if os.name != "posix":
        return  # os.kill(pid, 0) would end the process on Windows
    for folder in scratch.glob(f"{_SPILL_PREFIX}*-*"):
        try:
            os.kill(int(folder.name[len(_SPILL_PREFIX):].split("-")[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, OSError):
            continue  # not ours, or a live process of another user


@contextmanager
def _spilled(arrays: dict[str, np.ndarray], scratch: Path | None) -> Iterator[Path]:
    """``arrays`` in a temporary folder below ``scratch`` (default: the system's), removed after use
    (``_spill``)."""
    with writing(Path(scratch or tempfile.gettempdir())):
        if scratch is not None:
            Path(scratch).mkdir(parents=True, exist_ok=True)
            _remove_orphaned_spills(Path(scratch))
        folder = Path(tempfile.mkdtemp(prefix=f"{_SPILL_PREFIX}{os.getpid()}-", dir=scratch))
    try:
        _spill(folder, arrays)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _init_worker(parent_pid: int, folder: str, setup: Callable, setup_args: tuple) -> None:
    """Pool initializer. The worker ends with its parent; ignores SIGINT, which a terminal's Ctrl-C
    sends to the whole process group (the parent stops the workers, and no worker prints a traceback);
    ends at once on SIGTERM; trains on one thread (two 1-thread processes out-run one 2-thread one on a
    CPU); and maps the data once per worker rather than receiving it once per task."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked while the parent started it
    signal.signal(signal.SIGTERM, _end_on_sigterm)
    torch.set_num_threads(1)
    setup(_unspill(Path(folder)), *setup_args)


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Hold SIGINT while workers start: they inherit the block (as the stdlib's resource tracker does),
    so a Ctrl-C while they import cannot print their tracebacks; this process takes it right after."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _stop_workers(processes: list) -> None:
    """SIGTERM every live worker, SIGKILL any still alive after ``STOP_GRACE_SECONDS``, and reap them.
    A second Ctrl-C while waiting skips the grace, not the kill."""
    alive = [p for p in processes if p.exitcode is None]
    for p in alive:
        p.terminate()
    try:
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for p in alive:
            p.join(max(0.0, deadline - time.monotonic()))
    finally:
        for p in alive:
            if p.exitcode is None:
                p.kill()
                p.join(1.0)


class WorkerDied(Exception):
    """Workers of the pool ended on their own, with these ``exit_codes`` (None: unknown)."""

    def __init__(self, exit_codes: list[int | None]):
        super().__init__(exit_codes)
        self.exit_codes = exit_codes

    def describe(self) -> str:
        codes = [c for c in self.exit_codes if c is not None]
        if REIMPORT_EXIT in codes:
            return ("an evaluation worker process re-ran the script that started it (spawned workers import "
                    "the main script): put the script's code under `if __name__ == \"__main__\":`, "
                    "or set evaluate.workers=1")
        # SIGTERM: the pool stopping the other workers once one had died.
        own = [c for c in codes if c != -signal.SIGTERM] or codes
        if not own:  # it died before the pool knew it (a broken pipe while sending it the data)
            return ("an evaluation worker process ended while starting (if synthaug runs from a script, the "
                    "script needs `if __name__ == \"__main__\":`)")
        if own[0] >= 0:
            return f"an evaluation worker process ended unexpectedly with exit code {own[0]}"
        try:
            name = signal.Signals(-own[0]).name
        except ValueError:
            name = f"signal {-own[0]}"
        oom = (" (often the out-of-memory killer: set evaluate.workers=1 or free memory)"
               if name == "SIGKILL" else "")
        return f"an evaluation worker process was killed by {name}{oom}"


def run_pool(task: Callable, todo: list[tuple], workers: int, finished: Callable, *,
             arrays: dict[str, np.ndarray], setup: Callable, setup_args: tuple = (),
             scratch: Path | None = None) -> None:
    """Run ``task(*job)`` for every job of ``todo`` on ``workers`` spawned one-thread processes, calling
    ``finished(job, result)`` as jobs end.

    Each worker first calls ``setup(arrays, *setup_args)``, ``arrays`` memory-mapped from files in a
    temporary folder below ``scratch`` (``_spill``); ``task`` and ``setup`` are module-level functions,
    which the workers import. However it ends (all done, a failed job, a dead worker, Ctrl-C, SIGTERM), no
    worker outlives it and every job that finished has been passed to ``finished``. A worker that died
    raises ``WorkerDied``.
    """
    with _spilled(arrays, scratch) as folder:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(os.getpid(), str(folder), setup, setup_args))
        futures: dict = {}
        try:
            with _sigint_blocked():  # submit starts the workers
                for job in todo:
                    futures[pool.submit(task, *job)] = job
            for future in as_completed(futures):
                finished(futures.pop(future), future.result())
        except BaseException as exc:
            processes = list((getattr(pool, "_processes", None) or {}).values())
            # Which ended on their own, by their sentinels: the pool's thread may be reaping them right now.
            ended = [p for p in processes if multiprocessing.connection.wait([p.sentinel], timeout=0)]
            _stop_workers(processes)
            pool.shutdown(wait=True, cancel_futures=True)
            exit_codes = [p.exitcode for p in ended]  # final once the pool's thread has joined them all
            for future, job in futures.items():  # jobs that ended while the loop was elsewhere are kept too
                if future.done() and not future.cancelled() and future.exception() is None:
                    finished(job, future.result())
            if isinstance(exc, (BrokenProcessPool, BrokenPipeError)):
                raise WorkerDied(exit_codes) from None
            raise
        pool.shutdown()
