"""Stopping `dsmar` as users do: Ctrl-C in a terminal (SIGINT to the whole process group) and
`kill -TERM` (SIGTERM to the main process) both end it within seconds with one line and the usual exit
code, and leave no process (Prefect's temporary API, Dask workers, rustac) and no temporary folder behind.

Real processes throughout: `dsmar demo` in its own session, so the test can signal its group as a
terminal would without signalling pytest.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from pipeline.cube import open_cube

REGISTERING = r"tiles to register"
WRITING = r"tiles [1-9]\d*/\d+ written"  # chunks being written while registrations still run


def _start_demo(workdir: Path, when: str = REGISTERING) -> tuple[subprocess.Popen, list[str], threading.Event]:
    """`dsmar demo` with DS-MAR on 3 x 3 tiles per date: slow enough to be caught while tiles run; the event is
    set at the first stderr line matching `when`."""
    argv = [
        sys.executable,
        "-m",
        "dsmar.cli",
        "demo",
        "--workdir",
        str(workdir),
        "--size",
        "384",
        "--tile-size",
        "128",
        "--halo",
        "32",
        "--workers",
        "2",
    ]
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    lines: list[str] = []
    registering = threading.Event()

    def read() -> None:
        for line in process.stderr:
            lines.append(line.rstrip("\n"))
            if re.search(when, line):
                registering.set()

    threading.Thread(target=read, daemon=True).start()
    return process, lines, registering


@pytest.mark.parametrize(
    "signum,whole_group,code,word,when,delay",
    [
        (signal.SIGINT, True, 130, "interrupted", REGISTERING, 2.0),  # Ctrl-C in a terminal, tiles running
        (signal.SIGINT, True, 130, "interrupted", WRITING, 0.0),  # the same while chunks are being written
        (signal.SIGTERM, False, 143, "terminated", REGISTERING, 2.0),  # kill -TERM PID
    ],
)
def test_signal_stops_the_demo_quickly_and_completely(tmp_path, signum, whole_group, code, word, when, delay):
    process, lines, registering = _start_demo(tmp_path, when)
    try:
        assert registering.wait(240), f"the demo never reached {when!r}: {lines[-20:]}"
        time.sleep(delay)
        assert process.poll() is None, f"the demo ended before it could be interrupted: {lines[-20:]}"
        children = psutil.Process(process.pid).children(recursive=True)
        assert any("server start" in " ".join(c.cmdline()) for c in children), "Prefect's temporary API not found"
        stac_dirs = {
            m.group(0) for c in children for m in re.finditer(r"/\S*dsmar-stac-[^/\s]+", " ".join(c.cmdline()))
        }
        assert stac_dirs, "the demo's rustac server not found"
        sent = time.monotonic()
        if whole_group:
            os.killpg(process.pid, signum)
        else:
            os.kill(process.pid, signum)
        rc = process.wait(60)
        elapsed = time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    for survivor in alive:
        survivor.kill()
    time.sleep(0.2)  # the reader thread takes the last lines
    after = "\n".join(lines)
    assert rc == code, after[-3000:]
    assert lines[-1] == f"dsmar demo: {word}", after[-3000:]
    assert "Traceback" not in after, after[-3000:]
    assert elapsed < 15, f"took {elapsed:.1f} s to stop"
    assert not alive, f"left running: {[' '.join(p.cmdline())[:120] for p in alive]}"
    assert not any(Path(d).exists() for d in stac_dirs), stac_dirs
    # A signalled run leaves a cube that opens; that a rerun completes it exactly is test_resume.py's part.
    assert open_cube(str(tmp_path / "cube.zarr")).sizes["time"] == 2


FINALIZER_SIGNALLED = """
import signal, sys, time
from dsmar.cli import Terminated, _signals_unwind

class Dropped:
    def __del__(self):  # a Dask future released as it is dropped, when the signal comes
        signal.raise_signal(signal.SIG{name})
        sum(range(10_000))  # the handler runs at a bytecode boundary in here

try:
    with _signals_unwind():
        Dropped()
        time.sleep(10)
    print("ran on")
except Terminated:
    print("terminated")
except KeyboardInterrupt:
    print("interrupted")
"""


@pytest.mark.parametrize("name,word", [("INT", "interrupted"), ("TERM", "terminated")])
def test_a_signal_landing_in_a_finalizer_still_stops_the_program(name, word):
    """Python swallows what a `__del__` raises: a Ctrl-C caught there must be delivered again, not lost."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", FINALIZER_SIGNALLED.format(name=name)], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == word, done.stdout + done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
    assert time.monotonic() - started < 8


def test_a_signal_ignored_at_start_stays_ignored():
    """`dsmar ... &` in a script starts with SIGINT ignored, so that a Ctrl-C of the script leaves it running."""
    code = (
        "import signal, time\n"
        "from dsmar.cli import _signals_unwind\n"
        "with _signals_unwind():\n"
        "    signal.raise_signal(signal.SIGINT)\n"
        "    time.sleep(0.2)\n"
        "print('ran on')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ran on", done.stdout + done.stderr


def test_sigterm_stops_a_benchmark_run_and_its_workers_at_once(pairs_dir, tmp_path):
    """`kill` of `dsmar bench accuracy`: it used to wait for every queued pair first (here the whole eval
    split, minutes; with DS-MAR, half an hour), and its workers took the signal as a pair's result."""
    argv = [
        sys.executable,
        "-m",
        "dsmar.cli",
        "bench",
        "accuracy",
        "--pairs",
        str(pairs_dir),
        "--split",
        "eval",
        "--methods",
        "mind",
        "--workers",
        "2",
        "--no-landmarks",
        "--out",
        str(tmp_path),
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = process.stderr.readline()  # the first finished pair: the pool is running
    assert first.startswith("[1/"), first
    workers = psutil.Process(process.pid).children(recursive=True)
    assert workers
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert time.monotonic() - sent < 15
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
