"""bench/run.py: the RESULTS.md section convention and the runner that gathers every benchmark."""

from __future__ import annotations

import textwrap

import run as bench_run


def test_write_section_replaces_its_own_section_and_keeps_the_others(tmp_path):
    path = tmp_path / "RESULTS.md"
    bench_run.write_section("a", "## A\nfirst", path)
    bench_run.write_section("b", "## B\nkept", path)
    path.write_text(path.read_text() + "\nhand-written note\n")
    bench_run.write_section("a", "## A\nsecond", path)
    text = path.read_text()
    assert text.startswith(bench_run.TITLE)
    assert bench_run.read_section("a", path) == "## A\nsecond"
    assert bench_run.read_section("b", path) == "## B\nkept"
    assert "first" not in text and "hand-written note" in text
    assert text.index("BEGIN a") < text.index("BEGIN b")


def test_write_section_top_goes_right_after_the_title(tmp_path):
    path = tmp_path / "RESULTS.md"
    bench_run.write_section("late", "## L", path)
    bench_run.write_section("runner", "## R", path, top=True)
    text = path.read_text()
    assert text.index("BEGIN runner") < text.index("BEGIN late")


def test_write_section_handles_backslashes_and_dollar_signs(tmp_path):
    path = tmp_path / "RESULTS.md"
    bench_run.write_section("x", "old", path)
    bench_run.write_section("x", r"cost \1 $5 \n", path)
    assert bench_run.read_section("x", path) == r"cost \1 $5 \n"


def _script(folder, name, body):
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


def test_run_all_collects_output_and_reports_failures(tmp_path, monkeypatch):
    results = tmp_path / "RESULTS.md"
    monkeypatch.setenv("WEAVER_BENCH_RESULTS", str(results))
    bench = tmp_path / "bench"
    bench.mkdir()
    _script(bench, "writes", f"""
        import sys
        sys.path.insert(0, {str(bench_run.BENCH)!r})
        from run import write_section
        write_section("writes", "## writes\\nsmoke=" + str("--smoke" in sys.argv))
    """)
    _script(bench, "prints", "print('tokens/s 123.4')\n")
    _script(bench, "fails", "import sys\nprint('broken setup')\nsys.exit(3)\n")
    runs = bench_run.run_all(["writes", "prints", "fails", "absent"], smoke=True, timeout=60, bench_dir=bench)
    by = {r["name"]: r for r in runs}
    assert by["writes"]["rc"] == 0 and by["prints"]["rc"] == 0 and by["fails"]["rc"] == 3
    assert by["absent"]["missing"]
    assert bench_run.read_section("writes", results) == "## writes\nsmoke=True"
    assert "tokens/s 123.4" in bench_run.read_section("prints", results)
    failed = bench_run.read_section("fails", results)
    assert "FAILED (exit 3)" in failed and "broken setup" in failed


def test_runner_section_describes_machine_and_commands():
    started = bench_run.machine()
    assert int(started["nproc"]) >= 1 and started["ram"].endswith("GiB")
    runs = [{"name": "decode_speed", "cmd": "python bench/decode_speed.py --smoke", "rc": 0, "seconds": 1.5},
            {"name": "serve_load", "missing": True}]
    md = bench_run.runner_section(runs, smoke=True, started=started, total_s=2.0)
    assert "`python bench/decode_speed.py --smoke`" in md and "not present yet" in md
    assert started["cpu"] in md and "torch" in md


def test_discover_runs_known_benchmarks_in_order_and_picks_up_new_scripts(tmp_path):
    for name in ("run", "time_to_quality", "decode_speed", "zeta_new", "_helper"):
        (tmp_path / f"{name}.py").write_text("")
    names = bench_run.discover(tmp_path)
    assert names[-1] == "time_to_quality" and names[-2] == "zeta_new"
    assert "run" not in names and "_helper" not in names
    assert names.index("train_throughput") < names.index("decode_speed")
