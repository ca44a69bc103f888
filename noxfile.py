"""Task runner for humans and CI: `nox` runs the whole test suite (one environment per framework).

The default run (what CI runs) is the sessions from `tests_core` to `docs` below, except `canary`.
It leaves out the tests marked `slow` (every kill point of each crash matrix, the full HTTP API fuzz,
one of the three CrewAI templates): their small versions run in it, and `nox -s slow` runs the rest.
The oldest_* sessions also leave out the tests marked `newest` (cross-process approvals, CrewAI's
30 parallel crews), which `nox -s slow` runs on the oldest releases.

Sessions:
    tests_core         the durable core and the store contract (SQLite memory/file, PostgreSQL), artifacts on S3 (moto)
    tests_pydantic_ai  the PydanticAI adapter on pydantic-ai-slim's newest release
    tests_openai_agents the OpenAI Agents SDK adapter on openai-agents' newest release
    tests_server       the dashboard and HTTP API: API tests, schemathesis fuzz, Playwright on Debian's Chromium
    tests_crewai       the CrewAI adapter on crewai's newest release (own environment), pyright strict on it
    tests_langgraph    the LangGraph adapter on the newest langgraph/langchain, its checkpointer's conformance
    oldest_pydantic_ai, oldest_crewai, oldest_langgraph
                       each adapter's suite on the oldest release its extra supports (openai-agents: the
                       floor, 0.24, is also the newest release allowed, so tests_openai_agents covers it)
    canary             every adapter's suite on its framework's newest release, ignoring our caps (not default)
    lint               ruff and pyright (strict)
    docs               build the mkdocs site (--strict)
    slow               the tests marked `slow`, in each test session's environment (not default)
    demo               the README demo: an unchanged PydanticAI example run durably
    demo_openai_agents a durable OpenAI Agents refund desk, killed with SIGKILL and resumed
    fuzz_crashes       the crash fuzz at scale (150 generated programs killed with SIGKILL; `-- N` for N)
    bench              the core benchmark (prints figures; not a test)
    bench_store        the store at scale: executions list at 100,000 executions, SQLite and PostgreSQL
    bench_openai_agents what the OpenAI Agents adapter adds to a run, and what a resume saves
    bench_crewai       what the CrewAI adapter adds to a kickoff, and what a resume saves
    demo_crewai        a durable CrewAI order desk, killed with SIGKILL and resumed
    crash_crewai       30 parallel crews in a durable CrewAI Flow killed at more points (not in the default run)
    demo_langgraph     a durable LangGraph refund desk, killed with SIGKILL and resumed
    bench_langgraph    what the LangGraph adapter adds to a graph run, and what a resume saves
    values_long        the stored-values property tests (Hypothesis) with 2,000 examples each
    chaos_leases       fencing and store faults at larger trial counts (200 pause/takeover trials)
    chaos_workers      500 submitted executions of 20 calls, 4 workers on a PostgreSQL cluster the test starts,
                       one SIGKILLed every 2 s, one cluster restart (not default)
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = [
    "tests_core",
    "tests_pydantic_ai",
    "tests_openai_agents",
    "tests_server",
    "tests_crewai",
    "tests_langgraph",
    "oldest_pydantic_ai",
    "oldest_crewai",
    "oldest_langgraph",
    "lint",
    "docs",
]
nox.options.reuse_venv = "yes"

PYTHON = "3.11"
TEST_ENV = {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "OPENAI_AGENTS_DISABLE_TRACING": "1",
    "OTEL_SDK_DISABLED": "true",
    "PYTHONDONTWRITEBYTECODE": "",
}
# The default run leaves out tests marked `slow`: the large versions (every kill point of a crash
# matrix, the full fuzz) of tests whose small version runs here. `nox -s slow` runs them. A later
# `-m` in the posargs wins (`nox -s tests_crewai -- -m slow`).
NOT_SLOW = ("-m", "not slow")
# The oldest_* sessions also leave out tests marked `newest` (cross-process approvals, 30 parallel
# crews: our code more than the framework's seams, whose in-process tests still run there).
OLDEST = ("-m", "not slow and not newest")


def _install(session: nox.Session, extras: str = "") -> None:
    target = f".[{extras}]" if extras else "."
    session.install("--compile-bytecode", "editables", "-e", target, "--group", "test")


@nox.session(python=PYTHON)
def tests_core(session: nox.Session) -> None:
    """The core and the store contract suite (artifacts on S3: s3fs against moto's local S3 server)."""
    _install(session, "s3")
    session.install("--group", "s3-test")
    session.run("pytest", "tests/core", "tests/conformance", *NOT_SLOW, *session.posargs, env=TEST_ENV)


@nox.session(python=PYTHON)
def tests_pydantic_ai(session: nox.Session) -> None:
    """The PydanticAI adapter, on the newest pydantic-ai-slim and the author's example agents."""
    _install(session, "pydantic-ai")
    session.install("--upgrade", "-e", ".[pydantic-ai]", "pydantic-ai-slim[openai,mcp]")  # newest allowed
    # The examples' declared dependencies pull gradio, modal and more the two examples do not need.
    session.install("--no-deps", "pydantic-ai-examples")
    session.run("python", "-c", "import pydantic_ai; print('pydantic-ai', pydantic_ai.__version__)")
    session.run("pytest", "tests/pydantic_ai", *NOT_SLOW, *session.posargs, env=TEST_ENV)


def _floor(extra: str, package: str) -> str:
    """The oldest release of `package` that the `extra` supports: its `>=` bound in pyproject.toml."""
    import tomllib

    from packaging.requirements import Requirement

    with open("pyproject.toml", "rb") as handle:
        extras = tomllib.load(handle)["project"]["optional-dependencies"]
    for line in extras[extra]:
        requirement = Requirement(line)
        if requirement.name == package:
            for specifier in requirement.specifier:
                if specifier.operator == ">=":
                    return specifier.version
    raise ValueError(f"{package} has no >= bound in the {extra} extra")


def _print_versions(session: nox.Session, *packages: str) -> None:
    session.run(
        "python",
        "-c",
        "from importlib.metadata import version as v; "
        f"print(*(f'{{p}} {{v(p)}}' for p in {list(packages)!r}))",
    )


@nox.session(python=PYTHON)
def oldest_pydantic_ai(session: nox.Session) -> None:
    """The PydanticAI adapter's suite on the oldest supported pydantic-ai-slim."""
    floor = _floor("pydantic-ai", "pydantic-ai-slim")
    _install(session, "pydantic-ai")
    session.install(f"pydantic-ai-slim[openai,mcp]=={floor}")
    session.install("--no-deps", "pydantic-ai-examples")  # released less often: 2.62 is the newest
    _print_versions(session, "pydantic-ai-slim")
    session.run("pytest", "tests/pydantic_ai", *OLDEST, *session.posargs, env=TEST_ENV)


@nox.session(python=PYTHON)
def oldest_crewai(session: nox.Session) -> None:
    """The CrewAI adapter's suite on the oldest supported crewai (and the crewai-cli of that release)."""
    floor = _floor("crewai", "crewai")
    _install(session, "crewai")
    session.install(f"crewai=={floor}", f"crewai-cli=={floor}", "hatchling")
    _print_versions(session, "crewai")
    session.run("pytest", "tests/crewai", *OLDEST, *session.posargs, env=TEST_ENV)


@nox.session(python=PYTHON)
def oldest_langgraph(session: nox.Session) -> None:
    """The LangGraph adapter's suite on the oldest supported langgraph and langchain-core."""
    _install(session, "langgraph,postgres")
    session.install(
        *[package for package in LANGGRAPH_TEST_PACKAGES if package not in {"langgraph", "langchain-core"}],
        "langchain>=1.0",  # without a floor the resolver reaches back to langchain 0.0.x
        "langchain-openai>=1.0",
        f"langgraph=={_floor('langgraph', 'langgraph')}",
        f"langchain-core=={_floor('langgraph', 'langchain-core')}",
    )
    _print_versions(
        session, "langgraph", "langgraph-prebuilt", "langchain-core", "langchain", "langchain-openai"
    )
    session.run("pytest", "tests/langgraph", *OLDEST, *session.posargs, env=TEST_ENV)


@nox.session(python=PYTHON, venv_backend="none")
def canary(session: nox.Session) -> None:
    """Each adapter's suite on its framework's newest release, ignoring our caps: what would break.

    Not in the default run. Each framework gets its own environment under .nox/canary-<adapter>
    (they cannot share one); the session fails naming every adapter whose suite failed.
    """
    import os
    import subprocess

    frameworks = {
        "pydantic_ai": ("pydantic-ai", ["pydantic-ai-slim[openai,mcp]"], ["pydantic-ai-examples"]),
        "openai_agents": ("openai-agents", ["openai-agents"], []),
        "crewai": ("crewai", ["crewai", "crewai-cli", "hatchling"], []),
        "langgraph": ("langgraph,postgres", LANGGRAPH_TEST_PACKAGES, []),
    }
    broken: list[str] = []
    for adapter, (extras, packages, without_dependencies) in frameworks.items():
        location = f".nox/canary-{adapter}"
        python = f"{location}/bin/python"
        install = ["uv", "pip", "install", "--quiet", "--python", python]
        session.run("uv", "venv", "--quiet", "--allow-existing", "--python", PYTHON, location, external=True)
        session.run(*install, "editables", "-e", f".[{extras}]", "--group", "test", external=True)
        # Without the project in the same resolution, its caps do not hold back the upgrade.
        session.run(*install, "--upgrade", *packages, external=True)
        if without_dependencies:
            session.run(*install, "--upgrade", "--no-deps", *without_dependencies, external=True)
        session.log(f"canary: tests/{adapter} on the newest release")
        exit_code = subprocess.call(
            [python, "-m", "pytest", f"tests/{adapter}", "-q"], env={**os.environ, **TEST_ENV}
        )
        if exit_code != 0:
            broken.append(f"{adapter} (pytest exit {exit_code})")
    if broken:
        session.error(f"the newest framework releases break: {', '.join(broken)}")
    session.log("canary: every adapter's suite passes on its framework's newest release")


# Every default test session but the core's, whose suites have tests marked `slow` (the core's large
# runs are sessions of their own: fuzz_crashes, values_long, chaos_leases, chaos_workers; `-m slow`
# would select nothing there, which pytest reports as a failure).
SLOW_SESSIONS = [
    name for name in nox.options.sessions if name.startswith(("tests_", "oldest_")) and name != "tests_core"
]


@nox.session(venv_backend="none")
def slow(session: nox.Session) -> None:
    """The tests the default run leaves out (marked `slow`), in each test session's environment.

    Every kill point of each crash matrix, the HTTP API fuzz at full size, and the rest of each
    test whose small version the default run has; on the oldest releases also the tests marked
    `newest`. Queues the sessions of `SLOW_SESSIONS` with `-m slow` (`-m "slow or newest"` for
    the oldest_* ones) and this session's posargs after it; not in the default run.
    """
    for name in SLOW_SESSIONS:
        selection = "slow or newest" if name.startswith("oldest_") else "slow"
        session.notify(name, ["-m", selection, *session.posargs])


@nox.session(python=PYTHON)
def tests_server(session: nox.Session) -> None:
    """The dashboard and HTTP API; the browser tests drive /usr/bin/chromium (Debian's), never a download."""
    _install(session, "server,postgres,openai-agents")  # a real durable agent is approved in the browser
    session.install("--group", "server-test")
    session.run("pytest", "tests/server", *NOT_SLOW, *session.posargs, env=TEST_ENV)


@nox.session(python=PYTHON)
def tests_openai_agents(session: nox.Session) -> None:
    """The OpenAI Agents SDK adapter, on the newest openai-agents and the SDK's own examples."""
    _install(session, "openai-agents")
    session.install("--upgrade", "-e", ".[openai-agents]")  # the newest release our range allows
    session.run("python", "-c", "import agents; print('openai-agents', agents.__version__)")
    session.run("pytest", "tests/openai_agents", *NOT_SLOW, *session.posargs, env=TEST_ENV)


@nox.session(python=PYTHON)
def tests_crewai(session: nox.Session) -> None:
    """The CrewAI adapter on the newest crewai, with crewai-cli's templates; then pyright strict on it.

    crewai pins openai<3, which openai-agents cannot share, so it has its own environment, and the
    `lint` session's pyright leaves kitaru_adapters/crewai to this one. hatchling lets the tests
    install a generated project without network access (`--no-build-isolation`).
    """
    _install(session, "crewai")
    session.install("--upgrade", "-e", ".[crewai]", "crewai-cli")  # the newest release our range allows
    session.install("--group", "lint", "hatchling")
    session.run("python", "-c", "import crewai; print('crewai', crewai.__version__)")
    session.run("pytest", "tests/crewai", *NOT_SLOW, *session.posargs, env=TEST_ENV)
    session.run("pyright", "kitaru_adapters/crewai")


LANGGRAPH_TEST_PACKAGES = [
    "langgraph",
    "langchain-core",
    "langchain",
    "langchain-openai",
    "langgraph-checkpoint-conformance",
    "langgraph-checkpoint-sqlite",
    "langgraph-checkpoint-postgres",
    "aiosqlite",
]


@nox.session(python=PYTHON)
def tests_langgraph(session: nox.Session) -> None:
    """The LangGraph adapter on the newest langgraph, langchain and langchain-openai (ChatOpenAI over HTTP)."""
    _install(session, "langgraph,postgres")
    session.install("--upgrade", "-e", ".[langgraph,postgres]", *LANGGRAPH_TEST_PACKAGES)  # newest allowed
    session.run(
        "python",
        "-c",
        "from importlib.metadata import version as v; "
        "print(*(f'{p} {v(p)}' for p in ['langgraph', 'langchain-core', 'langchain', 'langchain-openai']))",
    )
    session.run("pytest", "tests/langgraph", *NOT_SLOW, *session.posargs, env=TEST_ENV)


# Adapters whose framework cannot share the lint environment; their own test session type-checks them.
OWN_ENVIRONMENT_ADAPTERS = {"crewai"}


def _pyright_paths() -> list[str]:
    adapters = sorted(
        str(path)
        for path in Path("kitaru_adapters").iterdir()
        if path.name not in OWN_ENVIRONMENT_ADAPTERS
        and (path.is_dir() or path.suffix == ".py")
        and path.name != "__pycache__"
    )
    return ["core/kitaru_core", *adapters]


@nox.session(python=PYTHON)
def chaos_leases(session: nox.Session) -> None:
    """Fencing and store faults with more trials: runners paused past their lease, PostgreSQL restarts.

    `KITARU_FENCING_TRIALS` (default here 200) sets the pause/takeover trials; the default
    `tests_core` run does 20.
    """
    _install(session, "postgres")
    trials = os.environ.get("KITARU_FENCING_TRIALS", "200")
    env = {**TEST_ENV, "KITARU_FENCING_TRIALS": trials}
    session.run(
        "pytest", "tests/core/test_fencing.py", "tests/core/test_store_faults.py", "-s", *session.posargs, env=env
    )


@nox.session(python=PYTHON)
def chaos_workers(session: nox.Session) -> None:
    """Workers under chaos on PostgreSQL: a random worker's process group SIGKILLed every 2 s and restarted.

    The workers use a PostgreSQL cluster the test starts itself (initdb and pg_ctl on a free port,
    as `postgres` when run as root), restarted once (`pg_ctl restart -m fast`) when a third of the
    executions have finished. Prints the figures (executions, completed, duplicate completed calls,
    takeover times, restart time). Sized by `KITARU_CHAOS_EXECUTIONS` (500), `KITARU_CHAOS_CALLS`
    (20), `KITARU_CHAOS_WORKERS` (4), `KITARU_CHAOS_KILL_EVERY_S` (2) and `KITARU_CHAOS_KILLS` (no
    limit); `tests_core` runs a small version without the restart.
    """
    _install(session, "postgres")
    defaults = {
        "KITARU_CHAOS_EXECUTIONS": "500",
        "KITARU_CHAOS_CALLS": "20",
        "KITARU_CHAOS_OWN_CLUSTER": "1",
        "KITARU_CHAOS_WORKERS": "4",
        "KITARU_CHAOS_KILL_EVERY_S": "2",
        "KITARU_CHAOS_KILLS": "100000",
        "KITARU_CHAOS_DEADLINE_S": "2400",
        "KITARU_REQUIRE_POSTGRES": "1",
    }
    env = {**TEST_ENV, **{name: os.environ.get(name, value) for name, value in defaults.items()}}
    session.run(
        "pytest",
        "tests/core/test_workers.py",
        "-k",
        "chaos_workers_survive",
        "-s",
        "-o",
        "timeout=3600",
        *session.posargs,
        env=env,
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff and pyright (strict) on the packages (CrewAI's adapter: in tests_crewai)."""
    _install(session, "pydantic-ai,openai-agents,server,langgraph")
    session.install("--group", "lint")
    session.run("ruff", "check", ".")
    session.run("pyright", *_pyright_paths())


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Run the unchanged `roulette_wheel` example durably against the scripted model server."""
    _install(session, "pydantic-ai")
    session.install("--no-deps", "pydantic-ai-examples")
    session.run("python", "examples/pydantic_ai_demo.py", *session.posargs, env=TEST_ENV)


@nox.session(python=PYTHON)
def demo_openai_agents(session: nox.Session) -> None:
    """Run the refund desk, SIGKILL it after its 4th checkpoint call, run it again: it resumes."""
    _install(session, "openai-agents")
    store = Path(session.create_tmp()) / "demo-openai-agents.db"
    store.unlink(missing_ok=True)
    env = {**TEST_ENV, "KITARU_STORE_URL": f"sqlite:///{store}", "KITARU_INTERACTIVE": "false"}
    script = "examples/openai_agents_refund_desk.py"
    session.run("python", script, "--crash-after", "4", env=env, success_codes=[-9, 137])
    session.log("Killed after 4 checkpoint calls; running it again resumes the execution:")
    session.run("python", script, "--timeline", env=env)


@nox.session(python=PYTHON)
def values_long(session: nox.Session) -> None:
    """Served values equal returned values: tests/core/test_values.py with many generated examples."""
    _install(session)
    examples = {"KITARU_HYPOTHESIS_EXAMPLES": "2000"}
    session.run("pytest", "tests/core/test_values.py", *session.posargs, env={**TEST_ENV, **examples})


@nox.session(python=PYTHON)
def fuzz_crashes(session: nox.Session) -> None:
    """The crash fuzz at scale: 150 generated programs SIGKILLed at random points (5 in tests_core)."""
    _install(session)
    examples = session.posargs[0] if session.posargs else "150"
    session.run(
        "pytest",
        "tests/core/test_crash_fuzz.py",
        "-s",
        env={**TEST_ENV, "KITARU_CRASH_FUZZ_EXAMPLES": examples, "KITARU_CRASH_FUZZ_REPORT": "1"},
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The core benchmark: checkpoint record/serve medians, resume of 1,000 calls, import time."""
    _install(session)
    session.run("python", "tests/benchmarks/bench_core.py", *session.posargs, env=TEST_ENV)


@nox.session(python=PYTHON)
def bench_store(session: nox.Session) -> None:
    """The store at scale: a page of the executions list at 100,000 executions, before/after its indexes."""
    _install(session)
    session.run("python", "tests/benchmarks/bench_store.py", *session.posargs, env=TEST_ENV)


@nox.session(python=PYTHON)
def bench_openai_agents(session: nox.Session) -> None:
    """Median run time plain vs durable vs served from the store, against the scripted server."""
    _install(session, "openai-agents")
    session.run("python", "tests/benchmarks/bench_openai_agents.py", *session.posargs, env=TEST_ENV)


@nox.session(python=PYTHON)
def bench_crewai(session: nox.Session) -> None:
    """Median kickoff time plain vs durable vs served from the store, against the scripted server."""
    _install(session, "crewai")
    session.run("python", "tests/benchmarks/bench_crewai.py", *session.posargs, env=TEST_ENV)


@nox.session(python=PYTHON)
def demo_langgraph(session: nox.Session) -> None:
    """Run the LangGraph refund desk, SIGKILL it after its 2nd checkpoint call, run it again: it resumes."""
    _install(session, "langgraph")
    session.install("langchain-openai")
    store = Path(session.create_tmp()) / "demo-langgraph.db"
    store.unlink(missing_ok=True)
    env = {**TEST_ENV, "KITARU_STORE_URL": f"sqlite:///{store}", "KITARU_INTERACTIVE": "false"}
    script = "examples/langgraph_refund_desk.py"
    session.run("python", script, "--crash-after", "2", env=env, success_codes=[-9, 137])
    session.log("Killed after 2 checkpoint calls; running it again resumes the thread:")
    session.run("python", script, "--timeline", env=env)


@nox.session(python=PYTHON)
def bench_langgraph(session: nox.Session) -> None:
    """Median graph run time plain vs durable vs served from the store, against the scripted server."""
    _install(session, "langgraph")
    session.install("langchain-openai")
    session.run("python", "tests/benchmarks/bench_langgraph.py", *session.posargs, env=TEST_ENV)


@nox.session(python=PYTHON)
def demo_crewai(session: nox.Session) -> None:
    """Run the CrewAI order desk, SIGKILL it after its 3rd checkpoint call, run it again: it resumes."""
    _install(session, "crewai")
    store = Path(session.create_tmp()) / "demo-crewai.db"
    store.unlink(missing_ok=True)
    env = {**TEST_ENV, "KITARU_STORE_URL": f"sqlite:///{store}", "KITARU_INTERACTIVE": "false"}
    script = "examples/crewai_order_desk.py"
    session.run("python", script, "--crash-after", "3", env=env, success_codes=[-9, 137])
    session.log("Killed after 3 checkpoint calls; running it again resumes the kickoff:")
    session.run("python", script, "--timeline", env=env)


@nox.session(python=PYTHON)
def crash_crewai(session: nox.Session) -> None:
    """30 crews kicked off in parallel in a durable Flow, SIGKILLed at several points and re-run."""
    _install(session, "crewai")
    session.install("--upgrade", "crewai")
    env = {**TEST_ENV, "KITARU_CREWAI_KILL_POINTS": "1,6,12,20,29"}
    session.run("pytest", "tests/crewai/test_parallel_crews.py", "-q", *session.posargs, env=env)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/."""
    _install(session, "pydantic-ai,openai-agents,server,langgraph")
    session.install("--group", "docs")
    session.run("mkdocs", "build", "--strict")
