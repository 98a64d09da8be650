"""Upstream test suites, bare and under ``cxtrace run``: instrumenting must change nothing.

``nox -s upstream`` runs this in a virtualenv holding cxtrace, Django, Flask, requests and
their test requirements. For each suite it takes the INSTALLED release's own tests from
its PyPI sdist (``pip download --no-binary :all:``, cached under .nox/upstream-cache),
runs them twice on fresh copies, bare and under ``cxtrace run --`` (every exporter
``none``), and compares the two, test by test:

- django: ``tests/runtests.py --parallel=1`` on the apps that exercise the handlers
  (handlers, requests_tests, responses, wsgi, asgi, middleware, ...), with
  ``CXTRACE_INTEGRATIONS=django,requests``;
- flask: ``python -m pytest tests`` (``CXTRACE_INTEGRATIONS=flask``); with
  ``--flask-src PATH`` also a Flask checkout's, in place, with the Python it is installed
  in (``--flask-src-python``; the nox session builds that virtualenv);
- requests: ``python -m pytest tests`` against pytest-httpbin's local server
  (``CXTRACE_INTEGRATIONS=requests``).

Every run has tests/upstream/probe/ on PYTHONPATH: its ``sitecustomize`` records what
cxtrace instrumented, that cxtrace's wrappers were in place, how many spans started and
ended (an upstream run that silently ran uninstrumented proves nothing) and the errors
cxtrace's guards swallowed; a result plugin (pytest) or test runner (Django) records
each test's outcome by id.

Prints the counts per suite and mode, every test that passed bare but failed (or did not
run) under cxtrace, grouped by cause (re-run once in each mode, to tell a cause from an
accident of timing), the errors cxtrace's guards swallowed, and any other change of
outcome; writes report.md (with tracebacks) and results.json into the cache folder.
Exit status 1 if a test passed bare only, cxtrace swallowed an error, a bare run
recorded no test, or a cxtrace run was not instrumented; 0 otherwise. Other changes of
outcome (an xfail that passes under cxtrace) are reported but do not fail the run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROBE = HERE / "probe"
MODES = ("bare", "cxtrace")
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
BAD = ("failed", "error")

# Django's test apps that go through the handlers: WSGIHandler/ASGIHandler directly, the
# test client's handlers (BaseHandler subclasses), LiveServerTestCase's threaded server.
DJANGO_APPS = (
    "handlers",
    "requests_tests",
    "responses",
    "wsgi",
    "asgi",
    "middleware",
    "middleware_exceptions",
    "test_client",
    "test_client_regress",
    "servers",
    "builtin_server",
)

FLASK_PATCHED = [
    f"flask.app:Flask.{name}"
    for name in ("__call__", "full_dispatch_request", "handle_exception", "handle_user_exception")
]
DJANGO_PATCHED = [
    "django.core.handlers.wsgi:WSGIHandler.__call__",
    "django.core.handlers.asgi:ASGIHandler.__call__",
    "django.core.handlers.base:BaseHandler.get_response",
    "django.core.handlers.base:BaseHandler.get_response_async",
    "django.core.handlers.base:BaseHandler.resolve_request",
]
REQUESTS_PATCHED = ["requests.sessions:Session.send"]


@dataclass
class Suite:
    key: str  # django, flask, flask-src, requests
    dist: str  # the distribution whose tests these are
    python: str
    integrations: str
    patched: list[str]
    spans: list[str]  # span kinds cxtrace must have started during the suite
    kind: str  # "django" or "pytest"
    plugins: list[str] = field(default_factory=list)  # pytest -p: no plugin is autoloaded
    source: Optional[Path] = None  # a checkout, run in place; else the sdist's tests
    version: str = ""
    label: str = ""
    runs: dict[str, Run] = field(default_factory=dict)


@dataclass
class Run:
    mode: str
    returncode: Any
    seconds: float
    log: Path
    results: dict[str, dict[str, str]]
    probe: dict[str, Any]
    others: int  # probe files of other processes (subprocesses the tests started)


# --------------------------------------------------------------------------- helpers


def say(text: str = "") -> None:
    print(text, flush=True)


def output(argv: Sequence[str], **kwargs: Any) -> str:
    return subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=600, **kwargs
    ).stdout.strip()


def installed_version(python: str, dist: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    return output([python, "-c", code])


def fetch_sdist(dist: str, version: str, cache: Path) -> Path:
    """The sdist of ``dist==version`` from PyPI, downloaded once into the cache."""
    folder = cache / "sdists" / f"{dist}-{version}"
    found = sorted(folder.glob("*.tar.gz"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    say(f"  downloading the {dist} {version} sdist")
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:"]
    subprocess.run(
        [*pip, "--no-deps", f"{dist}=={version}", "--dest", str(folder)],
        check=True,
        timeout=900,
    )
    found = sorted(folder.glob("*.tar.gz"))
    if not found:
        raise SystemExit(f"upstream: pip download left no sdist of {dist} {version} in {folder}")
    return found[0]


def extract(sdist: Path, dest: Path, only: Optional[str] = None) -> None:
    """Unpack ``sdist`` (its top folder stripped; only ``only/`` if given) into ``dest``."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        members = []
        for member in tar.getmembers():
            _, _, rest = member.name.partition("/")
            if not rest or (only and rest != only and not rest.startswith(only + "/")):
                continue
            member.name = rest
            members.append(member)
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, members=members, **safe)


def has_tests(sdist: Path) -> bool:
    with tarfile.open(sdist) as tar:
        return any(m.name.split("/")[1:2] == ["tests"] for m in tar.getmembers())


def environment(suite: Suite, mode: str, probe_dir: Path, results: Path) -> dict[str, str]:
    """The same environment for both modes, but for ``CXUPSTREAM_MODE``.

    cxtrace's variables are set in the bare run too (nothing reads them there), so that
    ``cxtrace run`` is the only difference between the two.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CXTRACE_", "OTEL_", "CXUPSTREAM_")) and k != "PYTHONPATH"
    }
    bin_dir = str(Path(suite.python).parent)
    env.update(
        PATH=os.pathsep.join([bin_dir, env.get("PATH", "")]),
        VIRTUAL_ENV=str(Path(bin_dir).parent),
        PYTHONPATH=str(PROBE),
        # One virtualenv serves every suite: each loads only the pytest plugins it names
        # (Flask's must not get pytest-httpbin, which requests' tests need).
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        CXUPSTREAM_MODE=mode,
        CXUPSTREAM_PROBE_DIR=str(probe_dir),
        CXUPSTREAM_RESULTS=str(results),
        CXUPSTREAM_PATCHED=",".join(suite.patched),
        CXTRACE_INTEGRATIONS=suite.integrations,
        OTEL_SERVICE_NAME=f"upstream-{suite.key}",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    return env


def command(suite: Suite, mode: str, selected: Optional[list[str]]) -> list[str]:
    if suite.kind == "django":
        labels = [django_label(test) for test in selected] if selected else list(DJANGO_APPS)
        argv = [suite.python, "runtests.py", "--settings=upstream_django_settings"]
        argv += ["--parallel=1", "--verbosity=2", "--noinput", *sorted(set(labels))]
    else:
        argv = [suite.python, "-m", "pytest", "-p", "upstream_pytest_results"]
        for plugin in suite.plugins:
            argv += ["-p", plugin]
        argv += ["-p", "no:cacheprovider", "-q", "-rfE", "--tb=short", *(selected or ["tests"])]
    if mode == "cxtrace":
        argv = [str(Path(suite.python).parent / "cxtrace"), "run", "--", *argv]
    return argv


def django_label(test_id: str) -> str:
    """``setUpClass (app.tests.Case)`` -> ``app.tests.Case``; a test id is its own label."""
    found = re.match(r"^\w+ \(([\w.]+)\)", test_id)
    return found.group(1) if found else test_id


def execute(argv: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float) -> Any:
    with log.open("wb") as out:
        out.write(("$ " + " ".join(argv) + f"\n(in {cwd})\n\n").encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return proc.pid, proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the run's own process group, started here
            proc.wait()
            return proc.pid, f"timeout after {timeout:.0f} s"


def run_once(
    suite: Suite,
    mode: str,
    folder: Path,
    lay: Optional[Callable[[Path], None]],
    timeout: float,
    selected: Optional[list[str]] = None,
) -> Run:
    """One run of the suite in ``mode``; its log, results and probe files in ``folder``.

    An sdist's tests are laid afresh for every run, always in the same place (test ids
    may contain the path: a parametrized ``__file__``), so bare and cxtrace runs differ in
    nothing else.
    """
    name = "rerun" if selected else "run"
    work = folder / mode
    probe_dir = work / f"{name}-probe"
    shutil.rmtree(probe_dir, ignore_errors=True)
    probe_dir.mkdir(parents=True)
    results_file = work / f"{name}-results.json"
    results_file.unlink(missing_ok=True)
    if lay is None:
        cwd = suite.source or Path.cwd()
    else:
        lay(folder / "tree")
        cwd = folder / "tree" / ("tests" if suite.kind == "django" else "")
    log = work / f"{name}.log"
    env = environment(suite, mode, probe_dir, results_file)
    started = time.monotonic()
    pid, returncode = execute(command(suite, mode, selected), cwd, env, log, timeout)
    seconds = time.monotonic() - started
    results: dict[str, dict[str, str]] = {}
    if results_file.exists():
        results = json.loads(results_file.read_text())["results"]
    probes = sorted(probe_dir.glob("probe-*.json"))
    mine = probe_dir / f"probe-{pid}.json"
    probe = json.loads(mine.read_text()) if mine.exists() else {}
    return Run(mode, returncode, seconds, log, results, probe, len(probes) - mine.exists())


# --------------------------------------------------------------------------- checks


def instrumentation_problems(suite: Suite, run: Run) -> list[str]:
    """Why this cxtrace run cannot count as instrumented (empty: it was)."""
    probe = run.probe
    if not probe:
        return ["the probe wrote nothing for the suite's process"]
    if run.mode == "bare":
        return ["cxtrace was imported in the bare run"] if probe.get("cxtrace_imported") else []
    problems = []
    if not probe.get("instrument_called"):
        return [f"cxtrace.instrument() was never called ({probe.get('probe_error', 'no error')})"]
    if not probe.get("enabled"):
        problems.append("instrument() returned a disabled handle")
    missing = set(suite.integrations.split(",")) - set(probe.get("integrations", ()))
    if missing:
        problems.append(f"integrations not enabled: {', '.join(sorted(missing))}")
    unpatched = [name for name, ok in probe.get("patched", {}).items() if not ok]
    if unpatched:
        problems.append(f"not cxtrace's wrapper after instrument(): {', '.join(unpatched)}")
    spans = probe.get("spans", {})
    for kind in suite.spans:
        if not spans.get(f"started {kind}"):
            problems.append(f"no {kind} span started during the suite")
    return problems


def counts(results: dict[str, dict[str, str]]) -> dict[str, int]:
    tally = dict.fromkeys(OUTCOMES, 0)
    for entry in results.values():
        if entry["outcome"] in tally:  # not "missing" (a rerun of a test that never ran)
            tally[entry["outcome"]] += 1
    return tally


def regressions(suite: Suite) -> list[str]:
    """Test ids that passed bare and failed, errored or did not run under cxtrace."""
    bare = suite.runs["bare"].results
    cx = suite.runs["cxtrace"].results
    return sorted(
        test
        for test, entry in bare.items()
        if entry["outcome"] == "passed"
        and cx.get(test, {}).get("outcome", "missing") in (*BAD, "missing")
    )


def differences(suite: Suite, exclude: list[str]) -> list[tuple[str, str, str]]:
    """(test, bare outcome, cxtrace outcome) for every other test whose outcome changed."""
    bare = suite.runs["bare"].results
    cx = suite.runs["cxtrace"].results
    skip = set(exclude)
    return [
        (
            test,
            bare.get(test, {}).get("outcome", "missing"),
            cx.get(test, {}).get("outcome", "missing"),
        )
        for test in sorted(set(bare) | set(cx))
        if test not in skip and bare.get(test, {}).get("outcome") != cx.get(test, {}).get("outcome")
    ]


# --------------------------------------------------------------------------- causes

_UNITTEST_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)\n(\s+\S[^\n]*)?', re.M)
_PYTEST_FRAME = re.compile(r"^(\S+\.py):(\d+): in (\S+)\n(\s+\S[^\n]*)?", re.M)


def gist(detail: str) -> tuple[str, str]:
    """(the exception line, the innermost cxtrace frame, or else the innermost frame).

    A frame is shown as ``path:line in function: source line``.
    """
    lines = [line for line in detail.splitlines() if line.strip()]
    e_lines = [line[1:].strip() for line in lines if line.startswith("E ")]
    if e_lines:
        exc = next((e for e in e_lines if re.match(r"^[\w.]+(Error|Exception|Warning)\b", e)), "")
        exc = exc or e_lines[0]
    else:
        tail = [line for line in lines if not line.startswith((" ", "\t"))]
        exc = tail[-1] if tail else (lines[-1] if lines else "")
    frames = [m.groups() for m in _UNITTEST_FRAME.finditer(detail)]
    frames += [m.groups() for m in _PYTEST_FRAME.finditer(detail)]
    ours = [f for f in frames if "/cxtrace/" in f[0] or f[0].startswith("cxtrace/")]
    if not frames:
        return exc[:240], "?"
    path, line, function, source = (ours or frames)[-1]
    where = re.sub(r"^.*?/(cxtrace|site-packages|src|tests)/", r"\1/", path)
    code = f": {source.strip()}" if source else ""
    return exc[:240], f"{where}:{line} in {function}{code}"


def group_causes(suite: Suite, tests: list[str]) -> list[tuple[str, list[str]]]:
    """Regressed tests grouped by exception (type and message, addresses and numbers
    aside) and, when a cxtrace frame is in the traceback, the innermost one."""
    groups: dict[tuple[str, str], list[str]] = {}
    cx = suite.runs["cxtrace"].results
    for test in tests:
        detail = cx.get(test, {}).get("detail", "")
        exc, frame = gist(detail) if detail else ("did not run under cxtrace", "")
        shape = re.sub(r"0x[0-9a-f]+|\b\d+\b", "#", exc)[:160]
        key = (shape, frame if frame.startswith("cxtrace/") else "")
        groups.setdefault(key, []).append(test)
    return sorted(((key[0], ids) for key, ids in groups.items()), key=lambda item: -len(item[1]))


# --------------------------------------------------------------------------- suites


def build_suites(args: argparse.Namespace) -> list[Suite]:
    wanted = [s.strip() for s in args.suites.split(",") if s.strip()]
    python = sys.executable
    suites = []
    for key in wanted:
        if key == "django":
            suites.append(
                Suite(
                    "django",
                    "django",
                    python,
                    "django,requests",
                    DJANGO_PATCHED,
                    ["SERVER"],
                    "django",
                )
            )
        elif key == "flask":
            suites.append(
                Suite("flask", "flask", python, "flask", FLASK_PATCHED, ["SERVER"], "pytest")
            )
        elif key == "requests":
            suites.append(
                Suite(
                    "requests",
                    "requests",
                    python,
                    "requests",
                    REQUESTS_PATCHED,
                    ["CLIENT"],
                    "pytest",
                    plugins=["pytest_httpbin.plugin", "pytest_mock"],
                )
            )
        else:
            raise SystemExit(f"upstream: unknown suite {key!r} (django, flask, requests)")
    if args.flask_src:
        source = Path(args.flask_src).resolve()
        if not (source / "tests").is_dir():
            raise SystemExit(f"upstream: {source} has no tests/ folder")
        suites.append(
            Suite(
                "flask-src",
                "flask",
                os.path.abspath(args.flask_src_python or python),  # not resolved: a venv link
                "flask",
                FLASK_PATCHED,
                ["SERVER"],
                "pytest",
                source=source,
            )
        )
    return suites


def prepare(suite: Suite, cache: Path) -> Optional[Callable[[Path], None]]:
    """Decide the version; return how to lay a fresh copy of the tests (None: in place)."""
    suite.version = installed_version(suite.python, suite.dist)
    if suite.source is not None:
        head = ""
        if (suite.source / ".git").exists():
            head = output(["git", "-C", str(suite.source), "log", "-1", "--format=%h %cs"])
        suite.label = f"{suite.dist} {suite.version} (checkout {suite.source}, {head})"
        return None
    suite.label = f"{suite.dist} {suite.version} (PyPI sdist)"
    sdist = fetch_sdist(suite.dist, suite.version, cache)
    if not has_tests(sdist):
        raise SystemExit(f"upstream: {sdist.name} has no tests/ folder")
    if suite.kind == "django":
        return lambda dest: extract(sdist, dest, only="tests")
    return lambda dest: extract(sdist, dest)


def run_suite(suite: Suite, cache: Path, timeout: float, rerun: bool) -> None:
    lay = prepare(suite, cache)
    folder = cache / "work" / suite.key
    say(f"== {suite.label}")
    for mode in MODES:
        run = run_once(suite, mode, folder, lay, timeout)
        suite.runs[mode] = run
        tally = counts(run.results)
        say(
            f"  {mode:8} {run.seconds:6.1f} s  exit {run.returncode}  "
            + "  ".join(f"{k} {v}" for k, v in tally.items() if v)
            + f"  (log: {run.log})"
        )
    rows = regressions(suite)
    if rows and rerun:
        # Once more, only those, in each mode: a test that fails again under cxtrace and
        # passes again bare is no accident of timing.
        again = {mode: run_once(suite, mode, folder, lay, timeout, rows) for mode in MODES}
        for test in rows:
            bare = again["bare"].results.get(test, {}).get("outcome", "missing")
            cx = again["cxtrace"].results.get(test, {}).get("outcome", "missing")
            entry = suite.runs["cxtrace"].results.setdefault(test, {"outcome": "missing"})
            entry["rerun"] = f"{bare}/{cx}"
        say(f"  re-ran the {len(rows)} that passed bare only (logs: rerun.log)")


# --------------------------------------------------------------------------- report


def suite_section(suite: Suite) -> tuple[list[str], dict[str, Any], bool]:
    """The report's section on one suite, its JSON summary, and whether it fails the run."""
    bare, cx = suite.runs["bare"], suite.runs["cxtrace"]
    probe = cx.probe
    patched = probe.get("patched", {})
    spans = ", ".join(f"{k} {v}" for k, v in sorted(probe.get("spans", {}).items())) or "none"
    out = [f"## {suite.label}", ""]
    out.append(
        f"- instrumented: integrations {','.join(probe.get('integrations', [])) or 'none'}; "
        f"cxtrace's wrappers in place {sum(patched.values())}/{len(patched)}; spans {spans}; "
        f"other instrumented processes {cx.others}; bare run imported cxtrace: "
        f"{'yes' if bare.probe.get('cxtrace_imported') else 'no'}"
    )
    problems = instrumentation_problems(suite, cx) + instrumentation_problems(suite, bare)
    if not bare.results:
        problems.append(f"the bare run recorded no test (exit {bare.returncode}; see {bare.log})")
    problems += [
        f"the {r.mode} run: exit {r.returncode}"
        for r in (bare, cx)
        if "timeout" in str(r.returncode)
    ]
    out += [f"- **NOT VALID**: {problem}" for problem in problems]
    rows = regressions(suite)
    out.append(f"- passed bare, failed or did not run under cxtrace: **{len(rows)}**")
    for exc, ids in group_causes(suite, rows):
        _, frame = gist(cx.results.get(ids[0], {}).get("detail", ""))
        out += ["", f"### {len(ids)} x `{exc}`", "", f"at `{frame}`", ""]
        for test in ids:
            entry = cx.results.get(test, {})
            again = entry.get("rerun")
            extra = f" (re-run bare/cxtrace: {again})" if again else ""
            out.append(f"- `{test}` {entry.get('outcome', 'missing')}{extra}")
        first = cx.results.get(ids[0], {}).get("detail", "")
        if first:
            out += ["", "```", first.strip()[-3000:], "```"]
    errors = probe.get("internal_errors", {})
    if errors:
        total = sum(e["count"] for e in errors.values())
        out += ["", f"### {total} errors cxtrace's guards swallowed (hidden from the host)", ""]
        for key, entry in sorted(errors.items(), key=lambda kv: -kv[1]["count"]):
            out.append(f"- {entry['count']} x `{key}`")
        worst = max(errors.values(), key=lambda e: e["count"])
        out += ["", "```", worst["traceback"].strip()[-3000:], "```"]
    changed = differences(suite, rows)
    if changed:
        out += ["", "### other outcome changes (bare -> cxtrace; these do not fail the run)", ""]
        out += [f"- `{test}` {b} -> {c}" for test, b, c in changed]
    summary = {
        "label": suite.label,
        "counts": {mode: counts(run.results) for mode, run in suite.runs.items()},
        "seconds": {mode: round(run.seconds, 1) for mode, run in suite.runs.items()},
        "regressions": {t: cx.results.get(t, {"outcome": "missing"}) for t in rows},
        "other_changes": changed,
        "problems": problems,
        "probe": {k: v for k, v in probe.items() if k != "internal_errors"},
        "internal_errors": errors,
    }
    return out, summary, bool(rows or problems or errors)


def report(suites: list[Suite], elapsed: float, cache: Path) -> int:
    lines = ["# Upstream suites, bare and under `cxtrace run`", ""]
    lines.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {elapsed:.0f} s in all.")
    lines += ["", "| suite | mode | " + " | ".join(OUTCOMES) + " | time |"]
    lines.append("|---" * (len(OUTCOMES) + 3) + "|")
    failing = False
    details: list[str] = []
    summary: dict[str, Any] = {}
    for suite in suites:
        for mode, run in suite.runs.items():
            tally = counts(run.results)
            cells = " | ".join(str(tally[k]) for k in OUTCOMES)
            lines.append(f"| {suite.label} | {mode} | {cells} | {run.seconds:.0f} s |")
        section, summary[suite.key], fails = suite_section(suite)
        failing = failing or fails
        details += ["", *section]
    verdict = (
        "FAILED: cxtrace changed an outcome, swallowed errors, or a run proves nothing"
        if failing
        else "OK: every test that passed bare passed under cxtrace, which was in place"
    )
    text = "\n".join([*lines, "", verdict, *details]) + "\n"
    (cache / "report.md").write_text(text)
    (cache / "results.json").write_text(json.dumps(summary, indent=1))
    shown, fenced = [], False
    for line in text.splitlines():  # the report without its tracebacks
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            shown.append(line)
    say("")
    say("\n".join(shown))
    say(f"\nthe report with tracebacks: {cache / 'report.md'}")
    return 1 if failing else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--suites", default="django,flask,requests", help="comma-separated (default: all three)"
    )
    parser.add_argument("--flask-src", help="a Flask checkout: run its tests too, in place")
    parser.add_argument(
        "--flask-src-python", help="the Python that checkout is installed in (default: this one)"
    )
    parser.add_argument(
        "--cache",
        default=str(ROOT / ".nox" / "upstream-cache"),
        help="sdists, the laid-out tests, logs and the report (default: %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("--no-rerun", action="store_true", help="do not re-run regressions")
    args = parser.parse_args(argv)
    cache = Path(args.cache).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    suites = build_suites(args)
    for suite in suites:
        run_suite(suite, cache, args.timeout, rerun=not args.no_rerun)
    return report(suites, time.monotonic() - started, cache)


if __name__ == "__main__":
    sys.exit(main())
