"""Progress where work is long: plain lines in logs and pipes, Rich bars on a terminal, and the
sweep's live table on a pseudo-terminal."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import run_in_pty
from PIL import Image
from rich.console import Console

from ascood import progress_report
from ascood.data import fixtures
from ascood.data.decode import CHUNK, decode_files
from ascood.progress_report import PlainLines, Reporter, RichBars, progress_for

VENV_BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def _plain(screen: str) -> str:
    return ANSI.sub("", screen)


def test_plain_lines_one_per_tenth_and_one_at_the_end():
    stream = io.StringIO()
    with PlainLines(stream).task("decode x", 95, "images") as task:
        for _ in range(95):
            task.advance()
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[1].split()[0] for line in lines] == [
        "10/95", "19/95", "29/95", "38/95", "48/95", "57/95", "67/95", "76/95", "86/95", "95/95"]
    assert lines[0] == "decode x: 10/95 images (11%)"
    assert re.fullmatch(r"decode x: 95/95 images \(100%, \d+\.\d s\)", lines[-1])


def test_plain_lines_after_a_quiet_half_minute_and_where_work_stopped(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(progress_report, "PLAIN_EVERY_S", 0.0)
    with PlainLines(stream).task("check", 1000) as task:
        task.advance(3)
        task.advance(2)
    assert stream.getvalue().splitlines() == ["check: 3/1000 (0%)", "check: 5/1000 (0%)"]
    monkeypatch.setattr(progress_report, "PLAIN_EVERY_S", 30.0)
    stream = io.StringIO()
    with PlainLines(stream).task("cut short", 1000) as task:
        task.advance(42)  # no tenth crossed: the closing line says where it stopped
    assert stream.getvalue().splitlines() == ["cut short: 42/1000 (4%)"]
    stream = io.StringIO()
    with PlainLines(stream).task("nothing to do", 0):
        pass
    assert stream.getvalue() == ""


def test_the_reporter_follows_the_console():
    assert type(progress_for(quiet=True)) is Reporter
    assert isinstance(progress_for(console=Console(file=io.StringIO())), PlainLines)
    terminal = Console(file=io.StringIO(), force_terminal=True, force_interactive=True, width=100)
    bars = progress_for(console=terminal)
    assert isinstance(bars, RichBars)
    with bars, bars.task("decode cmnist[classes=2]", 4, "images") as task:
        task.advance(4)
    screen = _plain(terminal.file.getvalue())
    assert "decode cmnist[classes=2]" in screen and "4/4" in screen and "━" in screen


def test_the_cache_build_counts_every_image_once_and_a_cached_read_nothing(tmp_path):
    paths = []
    for i in range(CHUNK + 7):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((5, 5, 3), i % 256, dtype=np.uint8)).save(paths[-1])
    counts: list[int] = []
    built = decode_files(paths, 8, tmp_path / "cache", workers=2, progress=counts.append)
    assert sorted(counts) == [7, CHUNK] and len(built.kept) == len(paths)
    again: list[int] = []
    decode_files(paths, 8, tmp_path / "cache", workers=2, progress=again.append)
    assert again == []


def _env() -> dict:
    return {**os.environ, "COLUMNS": "200"}


def test_ascood_data_check_lines_in_a_pipe_and_a_bar_on_a_terminal(tmp_path):
    root = tmp_path / "data"
    fixtures.write_openood(root, "cifar10")
    piped = subprocess.run([str(VENV_BIN / "ascood-data"), "check", str(root), "cifar10"],
                           capture_output=True, text=True, timeout=300, env=_env())
    assert piped.returncode == 0, piped.stdout + piped.stderr
    lines = [line for line in piped.stderr.splitlines() if line.startswith("check cifar10: ")]
    total = int(re.search(r"/(\d+) images", lines[-1]).group(1))
    assert re.fullmatch(rf"check cifar10: {total}/{total} images \(100%, \d+\.\d s\)", lines[-1])
    assert 2 <= len(lines) <= 11 and "all complete" in piped.stdout and "check cifar10" not in piped.stdout
    quiet = subprocess.run([str(VENV_BIN / "ascood-data"), "check", str(root), "cifar10", "--no-progress"],
                           capture_output=True, text=True, timeout=300, env=_env())
    assert quiet.returncode == 0 and "check cifar10" not in quiet.stderr
    rc, screen = run_in_pty([str(VENV_BIN / "ascood-data"), "check", str(root), "cifar10"], timeout=300)
    screen = _plain(screen)
    assert rc == 0, screen[-2000:]
    assert re.search(rf"check cifar10 ━+ {total}/{total} images 100%", screen), screen[-2000:]
    assert "all complete" in screen and f"check cifar10: {total}/" not in screen


def _trained_runs(sweep_out: Path) -> list[Path]:
    runs = sorted(p.parent for p in (sweep_out / "trials").rglob("checkpoint.pt"))
    assert len(runs) >= 2, runs
    return runs[:2]


def test_ascood_eval_counts_runs_in_lines_or_on_a_bar(finished_sweep, tmp_path):
    runs = _trained_runs(finished_sweep)
    cmd = [str(VENV_BIN / "ascood-eval"), *map(str, runs), "--no-search", "--scorers", "msp",
           "--out", str(tmp_path / "eval.parquet")]
    piped = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
    assert piped.returncode == 0, piped.stderr[-2000:]
    lines = [line for line in piped.stderr.splitlines() if line.startswith("evaluate: ")]
    assert lines[0] == "evaluate: 1/2 runs (50%)"
    assert re.fullmatch(r"evaluate: 2/2 runs \(100%, \d+\.\d s\)", lines[1]) and len(lines) == 2
    rc, screen = run_in_pty(cmd, timeout=300)
    screen = _plain(screen)
    assert rc == 0, screen[-2000:]
    assert re.search(r"evaluate ━+ 2/2 runs 100%", screen) and "AUROC" in screen


def test_the_live_sweep_table_renders_and_updates_on_a_terminal(finished_sweep):
    """The shared tiny sweep ran on a pseudo-terminal: its table was drawn again and again as the
    search stage's trials finished, and the summary followed it."""
    screen = (finished_sweep.parent / "terminal.txt").read_text()
    assert "\x1b[" in screen  # drawn with cursor movement, not printed line by line
    text = _plain(screen)
    assert text.count("sweep progress · ") >= 3
    done = [int(m) for m in re.findall(r"search\s*│\s*(\d+)/3\s*│", text)]
    assert done and done[0] < 3 and done[-1] == 3, done
    assert done == sorted(done) and len(set(done)) >= 2, done
    assert "trial " not in text.split("sweep progress", 1)[1].split("\n")[0]
    assert re.search(r"final\s*│\s*2/2\s*│", text), text[-3000:]
