"""Run every benchmark in bench/ and rewrite bench/RESULTS.md: `make bench` / `make bench-smoke`.

    .venv/bin/python bench/run.py                 # full suite -> bench/RESULTS.md, bench/plots/*.png
    .venv/bin/python bench/run.py --smoke         # tiny settings, < 3 min -> bench/.work/smoke/RESULTS.md
    .venv/bin/python bench/run.py --only time_to_quality,decode_speed

Each benchmark is a script `bench/<name>.py` taking `--smoke`. It writes its own part of RESULTS.md
between `<!-- BEGIN name -->` and `<!-- END name -->` with `write_section(name, markdown)` from this
file (import it: `sys.path.insert(0, str(Path(__file__).parent)); from run import write_section`), and
its plots into `plots_dir()`. Both honour WEAVER_BENCH_RESULTS / WEAVER_BENCH_PLOTS, which the runner
sets (smoke runs never touch the committed results). A script that writes no section gets one made by
the runner from the tail of its output. The runner's own section (`runner`, at the top) holds the
machine, the library versions, the exact commands, exit codes and durations.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# Known benchmarks in running order (the long time-to-quality run last); any other bench/*.py script joins
# the suite too (before time_to_quality), so a new benchmark needs no change here.
BENCHMARKS = ("train_throughput", "decode_speed", "serve_load", "support_retrieval", "time_to_quality")


def discover(bench_dir: Path = BENCH) -> list[str]:
    """The benchmark names to run: BENCHMARKS in order, plus every other bench/*.py script except run.py."""
    others = sorted(p.stem for p in bench_dir.glob("*.py") if p.stem not in BENCHMARKS and p.stem != "run"
                    and not p.stem.startswith("_"))
    return list(BENCHMARKS[:-1]) + others + [BENCHMARKS[-1]]
TITLE = "# Benchmark results\n\nWritten by `make bench` (bench/run.py); each section by its benchmark script.\n"
SHARED_NOTE = ("Load average above 1.5 on these cores: that includes the benchmark's own threads, so it does not "
               "by itself mean other work ran; if it did, absolute times are noisy. Ratios measured within one run "
               "are the figures to read.")


def results_path() -> Path:
    """Where results go: $WEAVER_BENCH_RESULTS, default bench/RESULTS.md."""
    return Path(os.environ.get("WEAVER_BENCH_RESULTS") or BENCH / "RESULTS.md")


def plots_dir() -> Path:
    """Where plots go (created): $WEAVER_BENCH_PLOTS, default bench/plots."""
    path = Path(os.environ.get("WEAVER_BENCH_PLOTS") or BENCH / "plots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_section(name: str, path: Path | None = None) -> str | None:
    """The markdown between name's markers in the results file, or None when absent."""
    path = path or results_path()
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    m = re.search(rf"<!-- BEGIN {re.escape(name)} -->\n(.*?)\n?<!-- END {re.escape(name)} -->", text, re.S)
    return m.group(1) if m else None


def write_section(name: str, markdown: str, path: Path | None = None, top: bool = False) -> Path:
    """Replace (or add) the section `name` of the results file, leaving every other section as it is.

    Args:
        name: section name (the benchmark's script name), e.g. "time_to_quality".
        markdown: the section's content (its own "## ..." heading included).
        path: results file; default results_path().
        top: put a new section right after the title instead of at the end.
    Returns:
        The results file's path.
    """
    path = path or results_path()
    block = f"<!-- BEGIN {name} -->\n{markdown.strip()}\n<!-- END {name} -->"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    with _locked(path):
        text = path.read_text(encoding="utf-8") if path.is_file() else TITLE
        if pattern.search(text):
            text = pattern.sub(lambda _m: block, text, count=1)
        elif top and text.startswith(TITLE):
            text = TITLE + "\n" + block + "\n" + text[len(TITLE):]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        _atomic_write(path, text)
    return path


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in out.splitlines() if ":" in ln)}


def machine() -> dict[str, str]:
    """nproc, CPU model, RAM, the SIMD/matrix flags that decide CPU speed (avx2/avx512*/amx*), load average."""
    info = _lscpu()
    flags = sorted(f for f in info.get("Flags", "").split() if re.match(r"(avx2|avx512|amx|fma)", f))
    mem_kb = 0
    try:
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    except (OSError, AttributeError):
        pass
    return {"nproc": str(os.cpu_count()), "cpu": info.get("Model name", platform.processor() or "unknown"),
            "ram": f"{mem_kb / 2**20:.1f} GiB", "flags": " ".join(flags) or "none of avx2/avx512/amx",
            "load": " / ".join(f"{x:.2f}" for x in os.getloadavg()), "os": platform.platform()}


def library_versions() -> dict[str, str]:
    """Versions of the libraries behind the figures (weaver.files.versions() plus the scorers and plots)."""
    from importlib import metadata

    try:
        from weaver.files import versions

        out = versions()
    except ImportError:
        out = {"python": platform.python_version()}
    for pkg in ("rouge-score", "sacrebleu", "matplotlib", "fastapi", "uvicorn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_one(script: Path, smoke: bool, timeout: float, log_dir: Path) -> dict:
    """Run one benchmark script; returns its command, exit code, duration and log tail."""
    cmd = [sys.executable, str(script)] + (["--smoke"] if smoke else [])
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{script.stem}.log"
    t = time.perf_counter()
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    tail = log.read_text(errors="replace").splitlines()[-40:]
    return {"name": script.stem, "cmd": " ".join(["python", f"bench/{script.name}"] + cmd[2:]), "rc": rc,
            "seconds": round(time.perf_counter() - t, 1), "log": str(log), "tail": tail}


def runner_section(runs: list[dict], smoke: bool, started: dict, total_s: float) -> str:
    """Markdown for the runner's section: machine, versions, commands, status of every benchmark."""
    m, end = started, machine()
    lines = ["## Machine, versions and commands", "",
             f"Run: `make {'bench-smoke' if smoke else 'bench'}` (`python bench/run.py{' --smoke' if smoke else ''}`)"
             f" on {time.strftime('%Y-%m-%d %H:%M %Z')}, {total_s:.0f} s in all."
             + (" Smoke mode: tiny models and a few steps; the figures prove the scripts run, nothing more."
                if smoke else ""), "",
             "| | |", "|---|---|",
             f"| CPU | {m['cpu']} ({m['nproc']} cores) |", f"| RAM | {m['ram']} |",
             f"| CPU flags | {m['flags']} |", f"| OS | {m['os']} |",
             f"| load average (1/5/15 min) | start {m['load']}; end {end['load']} |", "",
             "Libraries: " + ", ".join(f"{k} {v}" for k, v in library_versions().items() if k != "platform"), "",
             (SHARED_NOTE if max(float(x) for x in (m["load"] + " / " + end["load"]).split(" / ")) > 1.5 else
              "The machine was quiet (load average <= 1.5 at start and end)."), "",
             "| benchmark | command | exit | seconds |", "|---|---|---|---|"]
    for r in runs:
        status = "not present yet" if r.get("missing") else r["rc"]
        lines.append(f"| {r['name']} | `{r.get('cmd', '-')}` | {status} | {r.get('seconds', '-')} |")
    return "\n".join(lines)


def collected_section(run: dict) -> str:
    """A section made from a script's output, for scripts that write none of their own."""
    body = "\n".join(run["tail"]) or "(no output)"
    state = "succeeded" if run["rc"] == 0 else f"FAILED (exit {run['rc']})"
    return (f"## {run['name']}\n\n`{run['cmd']}` {state}; it wrote no section of its own, so here is the end of "
            f"its output (collected by bench/run.py):\n\n```\n{body}\n```")


def run_all(names: list[str], smoke: bool, timeout: float, bench_dir: Path = BENCH) -> list[dict]:
    """Run the named benchmarks in order; fill in a section for each one that wrote none (or failed)."""
    runs = []
    log_dir = BENCH / ".work" / ("smoke" if smoke else "full") / "logs"
    for name in names:
        script = bench_dir / f"{name}.py"
        if not script.is_file():
            runs.append({"name": name, "missing": True})
            continue
        before = read_section(name)
        print(f"bench: {name} ...", flush=True)
        run = run_one(script, smoke, timeout, log_dir)
        print(f"bench: {name} exit {run['rc']} in {run['seconds']} s (log {run['log']})", flush=True)
        after = read_section(name)
        wrote = after is not None and after != before
        if not wrote:
            write_section(name, collected_section(run))
        elif run["rc"] != 0:
            write_section(name, after + f"\n\n**This run FAILED (exit {run['rc']}); see {run['log']}.**")
        runs.append(run)
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the benchmarks in bench/ and rewrite RESULTS.md.")
    ap.add_argument("--smoke", action="store_true", help="tiny settings; results under bench/.work/smoke/")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default 170 smoke, none)")
    args = ap.parse_args(argv)
    known = discover()
    names = [n for n in args.only.split(",") if n] or known
    unknown = sorted(set(names) - set(known))
    if unknown:
        print(f"bench: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(known)}")
        return 2
    if args.smoke:
        smoke_dir = BENCH / ".work" / "smoke"
        os.environ.setdefault("WEAVER_BENCH_RESULTS", str(smoke_dir / "RESULTS.md"))
        os.environ.setdefault("WEAVER_BENCH_PLOTS", str(smoke_dir / "plots"))
    started, t = machine(), time.perf_counter()
    timeout = args.timeout or (170.0 if args.smoke else None)
    runs = run_all(names, args.smoke, timeout)
    write_section("runner", runner_section(runs, args.smoke, started, time.perf_counter() - t), top=True)
    failed = [r["name"] for r in runs if not r.get("missing") and r["rc"] != 0]
    print(f"bench: results in {results_path()}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
