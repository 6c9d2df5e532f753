"""Evaluation faults: the arm cache answers only for the same content, a worker that dies (killed, or
re-running a script without a main guard) is one clear line with the finished runs kept, workers end
with their parent, and the report draws and escapes text from the data as written and refuses a
malformed metrics.json by key.

Signals to the main ``synthaug evaluate`` process (SIGINT, SIGTERM, SIGKILL) while its workers run are
in tests/test_interrupts.py, beside the other interrupted commands; the process helpers live here.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from helpers import SMOKE, assert_one_line, invoke

import synthaug.evaluation as evaluation
import synthaug.workers as workers
from synthaug.config import EvaluateConfig
from synthaug.evaluation import EvalData, arms_fingerprint, run_arms
from synthaug.report import build_report

# ----------------------------------------------------------------------------------------- processes


def process_table() -> dict[int, tuple[int, bool, str]]:
    """``{pid: (parent pid, is a zombie, command line)}`` of every process, from psutil or else /proc."""
    try:
        import psutil
    except ImportError:
        psutil = None
    table = {}
    if psutil is not None:
        for p in psutil.process_iter(["ppid", "status", "cmdline"]):
            table[p.pid] = (p.info["ppid"], p.info["status"] == psutil.STATUS_ZOMBIE,
                            " ".join(p.info["cmdline"] or []))
        return table
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError):
                continue  # ended while we looked
            table[int(entry.name)] = (int(ppid), state == "Z", command)
    return table


def descendants(pid: int, table: dict | None = None) -> set[int]:
    """Every live process below ``pid``: pool workers, multiprocessing's resource tracker, ..."""
    table = process_table() if table is None else table
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, (ppid, zombie, _) in table.items() if ppid in frontier and not zombie} - found
        found |= frontier
    return found


def pool_workers(pid: int) -> set[int]:
    """The spawned multiprocessing workers below ``pid`` (not its resource tracker)."""
    table = process_table()
    return {p for p in descendants(pid, table) if "--multiprocessing-fork" in table[p][2]}


def wait_until_gone(pids: set[int], seconds: float) -> set[int]:
    """Wait up to ``seconds`` for ``pids`` to end (a zombie has ended); return those still running."""
    deadline = time.monotonic() + seconds
    while True:
        table = process_table()
        running = {p for p in pids if p in table and not table[p][1]}
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


# -------------------------------------------------------------------------------------------- cache


def _data(n: int, id_start: int, seed: int) -> EvalData:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return EvalData(rng.integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8), y, id_start + np.arange(n))


def _one_pixel_changed(data: EvalData) -> EvalData:
    x = data.x.copy()
    x[-1, 7, 7, 0] ^= 1
    return EvalData(x, data.y, data.ids, data.weight)


def test_cached_arm_runs_answer_only_for_the_same_content(tmp_path: Path, monkeypatch):
    trained: list[tuple[str, int]] = []
    real_run_arm = evaluation.run_arm

    def counting(arm, seed, *args):
        trained.append((arm, seed))
        return real_run_arm(arm, seed, *args)

    monkeypatch.setattr(evaluation, "run_arm", counting)
    train, test, synthetic = _data(30, 0, 0), _data(15, 100, 1), _data(12, 200, 2)
    cfg = EvaluateConfig(steps=3, batch_size=8, seeds=[0], arms=["real", "synthetic"], workers=1)

    def evaluate(train=train, test=test, synthetic=synthetic, cfg=cfg) -> list[tuple[str, int]]:
        trained.clear()
        arms = run_arms(train, test, synthetic, 3, cfg, progress=False, cache_dir=tmp_path / ".runs")
        return sorted(trained), arms

    first, arms = evaluate()
    assert first == [("real", 0), ("synthetic", 0)]
    assert evaluate() == ([], arms), "nothing changed: every run comes from the cache"
    assert evaluate(cfg=cfg.model_copy(update={"workers": 2, "judge_steps": 7}))[0] == [], \
        "settings no arm reads do not retrain"
    assert evaluate(cfg=cfg.model_copy(update={"seeds": [0, 1]}))[0] == [("real", 1), ("synthetic", 1)]

    assert evaluate(train=_one_pixel_changed(train))[0] == [("real", 0), ("synthetic", 0)]
    assert evaluate(test=_one_pixel_changed(test))[0] == [("real", 0), ("synthetic", 0)]
    assert evaluate(synthetic=_one_pixel_changed(synthetic))[0] == [("synthetic", 0)], \
        "a new synthetic set retrains only the arms that use it"
    assert evaluate(cfg=cfg.model_copy(update={"steps": 4}))[0] == [("real", 0), ("synthetic", 0)]
    assert evaluate(cfg=cfg.model_copy(update={"synthetic_weight": 0.5}))[0] == [("synthetic", 0)]


def test_the_fingerprint_reads_large_and_memory_mapped_arrays_in_chunks(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(evaluation, "_HASH_CHUNK_BYTES", 256)  # several chunks for a few images
    data = _data(40, 0, 0)
    np.save(tmp_path / "x.npy", data.x)
    mapped = EvalData(np.load(tmp_path / "x.npy", mmap_mode="r"), data.y, data.ids)
    cfg = EvaluateConfig()
    digest = arms_fingerprint((data,), 3, cfg, synthetic=False)
    assert arms_fingerprint((mapped,), 3, cfg, synthetic=False) == digest
    assert arms_fingerprint((_one_pixel_changed(data),), 3, cfg, synthetic=False) != digest  # in the last chunk
    relabelled = EvalData(data.x, (data.y + 1) % 3, data.ids)
    assert arms_fingerprint((relabelled,), 3, cfg, synthetic=False) != digest
    weighted = EvalData(data.x, data.y, data.ids, np.full(len(data), 0.5, dtype=np.float32))
    assert arms_fingerprint((weighted,), 3, cfg, synthetic=False) != digest


# ------------------------------------------------------------------------------------- dead workers


def _kill_a_worker_once_a_run_is_cached(runs: Path) -> threading.Thread:
    def kill() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            workers = pool_workers(os.getpid())
            if len(workers) >= 2 and any(runs.rglob("*@*.json")):
                os.kill(min(workers), signal.SIGKILL)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_a_killed_worker_is_one_line_and_the_finished_runs_are_kept(tmp_path: Path, monkeypatch):
    run = tmp_path / "run"
    runs = run / "report" / ".runs"
    settings = ["evaluate.arms=[real]", "evaluate.seeds=[0, 1, 2, 3]", "evaluate.steps=100"]
    args = [x for o in settings for x in ("--set", o)]
    killer = _kill_a_worker_once_a_run_is_cached(runs)
    result = invoke("evaluate", SMOKE, "--out", run, *args, "--set", "evaluate.workers=2")
    killer.join(timeout=10)
    line = assert_one_line(result, 1, "an evaluation worker process was killed by SIGKILL", "out-of-memory",
                           "kept in", "--resume")
    kept = int(re.search(r"(\d+) of 4 arm runs finished", line).group(1))
    assert 1 <= kept < 4 and len(list(runs.rglob("*@*.json"))) == kept
    assert not pool_workers(os.getpid()), "no worker outlives the failed evaluation"
    assert not list(runs.rglob(".arm-inputs-*")), "the workers' copy of the data is removed"
    assert not (run / "report" / "metrics.json").exists()

    trained = []
    real_run_arm = evaluation.run_arm
    monkeypatch.setattr(evaluation, "run_arm", lambda *a: trained.append(a[:2]) or real_run_arm(*a))
    result = invoke("evaluate", run, "--resume", "--set", "evaluate.workers=1")
    assert result.exit_code == 0, result.output
    assert len(trained) == 4 - kept, "the kept runs are not trained again"


NO_MAIN_GUARD = """
    import numpy as np
    from synthaug.config import EvaluateConfig
    from synthaug.evaluation import EvalData, run_arms

    print("top level", flush=True)
    y = np.arange(3000) % 3  # 190 KB of images: more than a pipe holds
    x = np.random.default_rng(0).integers(0, 256, size=(3000, 8, 8, 1), dtype=np.uint8)
    train, test = EvalData(x[:2970], y[:2970], np.arange(2970)), EvalData(x[2970:], y[2970:], np.arange(2970, 3000))
    cfg = EvaluateConfig(steps=5, batch_size=8, seeds=[0, 1], arms=["real"], workers=2)
    run_arms(train, test, None, 3, cfg, progress=False)
"""


@pytest.mark.slow
def test_a_script_without_a_main_guard_fails_with_the_fix_instead_of_waiting(tmp_path: Path):
    script = tmp_path / "evaluate_it.py"
    script.write_text(textwrap.dedent(NO_MAIN_GUARD))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    # It used to wait forever: the parent blocked writing the data into the pipe of a worker that had died.
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180,
                          cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)})
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("synthaug.errors.EnvironmentFailure: an evaluation worker process re-ran the script")
    assert 'put the script\'s code under `if __name__ == "__main__":`' in last
    # The workers ended quietly: the only traceback is the script's own, none from a worker's start.
    assert done.stderr.count("Traceback") == 1 and "RuntimeError" not in done.stderr, done.stderr[-3000:]
    assert done.stdout.count("top level") == 3  # the script, then once in each worker before it stopped
    assert not list(scratch.iterdir()), "the workers' copy of the data is removed"


def _worker_watching_its_parent(parent_pid: int, pids) -> None:
    workers._die_with_parent(parent_pid, prctl=False)  # the portable watch alone
    pids.put(os.getpid())
    time.sleep(120)


def _parent_of_a_watching_worker(pids) -> None:
    spawn = multiprocessing.get_context("spawn")
    spawn.Process(target=_worker_watching_its_parent, args=(os.getpid(), pids)).start()
    time.sleep(120)


@pytest.mark.slow
def test_a_worker_ends_when_its_parent_is_killed_without_prctl_too():
    spawn = multiprocessing.get_context("spawn")
    pids = spawn.Queue()
    parent = spawn.Process(target=_parent_of_a_watching_worker, args=(pids,))
    parent.start()
    started = {parent.pid}
    try:
        worker = pids.get(timeout=120)  # once its watch has started
        started.add(worker)
        assert worker in descendants(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.join(10)
        assert not wait_until_gone({worker}, 5), "the worker outlived its killed parent"
    finally:
        for pid in wait_until_gone(started, 0):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------------- report

TRICKY = ["<script>alert(1)</script>", "$x$", "$HOME_$USER", "a & b"]


def _arm(f1: float) -> dict:
    cell = {"mean": f1, "std": 0.01}
    return {"accuracy": cell, "macro_f1": cell, "balanced_accuracy": cell, "per_class_f1": [f1] * len(TRICKY),
            "runs": [{"seed": 0}]}


def _tricky_metrics() -> dict:
    counts = {name: 3 for name in TRICKY}
    return {
        "dataset": {"classes": TRICKY, "train_counts": counts, "test_counts": counts},
        "generation": {"counts": counts, "sampler": "<b>dpmpp</b>"},
        "quality": {"judge_accuracy": 0.5, "per_class_judge_accuracy": [0.5] * len(TRICKY)},
        "arms": {"real": _arm(0.7), "real+synthetic": _arm(0.8)},
        "lift": {"macro_f1": 0.1, "best_baseline": "real", "best_synthetic_arm": "real+synthetic"},
    }


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def test_text_from_the_data_is_shown_as_written_in_the_page_and_the_plots(tmp_path: Path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text(json.dumps(_tricky_metrics()))
    (report / "recipe.yaml").write_text("name: x\nnote: <script>alert(2)</script> $y$\n")
    (report / "loss.csv").write_text("step,$a_$b_loss\n0,1.0\n1,0.5\n")
    rng = np.random.default_rng(0)
    np.savez(report / "assets.npz", real_x=rng.integers(0, 256, (8, 8, 8, 1), dtype=np.uint8),
             real_y=np.arange(8) % len(TRICKY))

    html = build_report(report).read_text(encoding="utf-8")
    assert "<script" not in html and "<b>dpmpp" not in html  # nothing from the data is markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;script&gt;alert(2)" in html
    page = _Images()
    page.feed(html)
    text = "".join(page.text)
    for name in TRICKY:
        assert name in text, name  # shown as written
    for png in ("arms.png", "per_class_f1.png", "class_counts.png", "samples.png", "loss.png"):
        assert png in page.images and (report / png).read_bytes()[:4] == b"\x89PNG", png


def _malformed(metrics: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    node = metrics
    for key in parents:
        node = node[key]
    node[last] = value
    return metrics


MALFORMED = {
    "a string for an arm's mean": ("arms.real.macro_f1.mean", "0.7x", "expected a number, got \"0.7x\""),
    "a string for a std": ("arms.real+synthetic.accuracy.std", "wide", "expected a number"),
    "a string in per-class F1": ("arms.real.per_class_f1", [0.5, "n/a"], "arms.real.per_class_f1[1]: expected a number"),
    "an arm without macro-F1": ("arms.real.macro_f1", None, 'expected an object with a "mean"'),
    "arms as a list": ("arms", ["real"], "arms: expected an object, got [\"real\"]"),
    "a count as text": ("dataset.train_counts.a & b", "three", "dataset.train_counts.a & b: expected a number"),
    "classes as a string": ("dataset.classes", "abc", "dataset.classes: expected a list of class names"),
    "a best arm that is a list": ("lift.best_baseline", ["real"], "lift.best_baseline: expected an arm name"),
    "a quality value as text": ("quality.judge_accuracy", "high", "quality.judge_accuracy: expected a number"),
}


@pytest.mark.parametrize("key, value, expected", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_metrics_json_is_one_line_naming_the_file_and_key(key, value, expected, tmp_path: Path):
    run = tmp_path / "run"
    (run / "report").mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: x\ndata: {source: 'builtin:digits'}\n")
    path = run / "report" / "metrics.json"
    path.write_text(json.dumps(_malformed(_tricky_metrics(), key, value)))
    assert_one_line(invoke("report", run), 2, f"{path}: ", expected, "synthaug evaluate --overwrite")
    assert not (run / "report" / "index.html").exists()


LAUNCHED_RANK = """
import os, sys, time
from synthaug import stages
from synthaug.errors import SynthaugError
try:
    stages.report({"no such key": 1})  # any stage's entry, even one that then refuses its recipe
except SynthaugError:
    pass
print(os.getpid(), flush=True)
time.sleep(120)
"""

RANK_OF_A_DEAD_LAUNCHER = """
import os, time
import synthaug  # what the `synthaug` command and a user's script do first
launcher = os.getppid()
print(os.getpid(), flush=True)
while os.getppid() == launcher:  # the launcher dies while this copy is still importing
    time.sleep(0.05)
from synthaug import stages
from synthaug.errors import SynthaugError
try:
    stages.report({"no such key": 1})
except SynthaugError:
    pass
time.sleep(120)
"""

LAUNCHER = """
import os, subprocess, sys, time
# as Lightning's DDP launcher starts the copy of the command for another device
child = subprocess.Popen([sys.executable, "-c", sys.argv[2]], env={**os.environ, "LOCAL_RANK": sys.argv[1]},
                         stdout=subprocess.PIPE, text=True)
print(child.stdout.readline().strip(), flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("rank, ends, script", [("1", True, LAUNCHED_RANK), ("0", False, LAUNCHED_RANK),
                                                 ("1", True, RANK_OF_A_DEAD_LAUNCHER)],
                         ids=["rank 1", "rank 0", "rank 1 whose launcher died before the stage began"])
def test_a_device_copy_of_a_stage_ends_with_its_launcher(rank, ends, script):
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, rank, script], stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "LOCAL_RANK": ""})
    child = None
    try:
        child = int(launcher.stdout.readline())  # once the stage's entry has run
        assert child in descendants(launcher.pid)
        launcher.kill()
        launcher.wait(10)
        still = wait_until_gone({child}, 60 if ends else 5)  # the late copy still imports its stage
        assert bool(still) != ends, f"LOCAL_RANK={rank}: the copy {'outlived' if still else 'ended with'} its launcher"
    finally:
        launcher.kill()
        if child is not None:
            for pid in wait_until_gone({child}, 0):
                os.kill(pid, signal.SIGKILL)
