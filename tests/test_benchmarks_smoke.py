"""The benchmark suite still runs: ``python -m benchmarks --quick`` (tiny sizes, one run).

No timing is asserted here; the figures live in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MEASURED = re.compile(r"^Measured (.+?) on (.+?) by `(python -m benchmarks[^`]*)`\.$", re.M)


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.timeout(300)  # about 25 s of CPU: minutes when the two cores are shared
def test_quick_suite_runs_every_benchmark() -> None:
    """Every registered benchmark runs in smoke mode, reports, and RESULTS.md is untouched."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.__main__ import BENCHMARKS, RESULTS
    finally:
        sys.path.remove(str(ROOT))
    before = RESULTS.read_bytes() if RESULTS.exists() else None
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for name in BENCHMARKS:
        assert f"[{name}] done" in done.stdout, f"{name} missing:\n{done.stdout[-4000:]}"
    assert "| figure | median | min | max |" in done.stdout
    assert (RESULTS.read_bytes() if RESULTS.exists() else None) == before
    # Each section names the code it measured: this work tree's commit.
    head = _git("rev-parse", "--short", "HEAD").stdout.strip()
    measured = MEASURED.findall(done.stdout)
    assert len(measured) == len(BENCHMARKS), done.stdout[-4000:]
    for _, code, command in measured:
        assert code.startswith(f"commit {head}"), code
        assert command == "python -m benchmarks --quick"


def test_every_results_section_names_its_own_commit() -> None:
    """Sections of RESULTS.md measured by different runs each name their commit (one that
    exists) and command; the header names none for them all."""
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    generated = text.split("<!-- hand-written notes below", 1)[0]
    sections = re.findall(r"<!-- bench:(\w+) -->(.*?)<!-- /bench:\1 -->", generated, re.S)
    assert sections
    header = generated.split("<!-- bench:", 1)[0]
    machine = header.split("## Machine", 1)[1]
    assert not re.search(r"\b[0-9a-f]{7,40}\b", machine), machine  # no commit for them all
    if _git("rev-parse", "--is-shallow-repository").stdout.strip() != "false":
        return  # a shallow clone cannot tell an old commit from a missing one
    for name, body in sections:
        (found,) = MEASURED.findall(body)
        commit = re.fullmatch(r"commit ([0-9a-f]{7,40})", found[1])
        assert commit, f"{name}: {found[1]}"
        exists = _git("cat-file", "-e", f"{commit.group(1)}^{{commit}}")
        assert exists.returncode == 0, f"{name}: no commit {commit.group(1)}"


def test_a_partial_rerun_keeps_each_kept_sections_commit() -> None:
    """Rewriting RESULTS.md after ``--only`` keeps the other sections with their own
    commits: the file then holds two, each under the section it belongs to."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks._suite import (
            Figure,
            Section,
            existing_sections,
            kept_notes,
            render_results,
            render_section,
        )
    finally:
        sys.path.remove(str(ROOT))
    figure = Figure("x", [1.0], "s")
    old = render_results(
        ["a", "b"],
        {
            n: render_section(
                Section(n, n, "w", [figure]), "python -m benchmarks", "D1", "commit 1111111"
            )
            for n in ("a", "b")
        },
        "python -m benchmarks",
        "D1",
        "notes\n",
    )
    rerun = render_section(
        Section("b", "b", "w", [figure]), "python -m benchmarks --only b", "D2", "commit 2222222"
    )
    new = render_results(
        ["a", "b"],
        {**existing_sections(old), "b": rerun},
        "python -m benchmarks --only b",
        "D2",
        kept_notes(old),
    )
    found = {name: MEASURED.findall(body) for name, body in existing_sections(new).items()}
    assert found == {
        "a": [("D1", "commit 1111111", "python -m benchmarks")],
        "b": [("D2", "commit 2222222", "python -m benchmarks --only b")],
    }
    assert kept_notes(new).strip() == "notes"


def test_profile_engine_runs_every_ablation() -> None:
    """The ablation tool still reaches the internals it patches (tiny workflow, one run)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.profile_engine",
            "--runs",
            "1",
            "--nodes",
            "50",
            "--shape",
            "chain",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "| no output encoding (engine.encode_output) |" in done.stdout
    assert "| bare asyncio scheduler |" in done.stdout
