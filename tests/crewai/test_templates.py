"""The crewai-cli templates, rendered with `crewai create`, made durable by one decorator, run by `crewai run`.

Offline: the generated project is installed without its dependencies into a throwaway venv that
sees this environment's packages (`uv pip install --no-deps --no-build-isolation`), and
`crewai run` (which runs `uv run <script>`) uses that venv without syncing
(`UV_PROJECT_ENVIRONMENT`, `UV_NO_SYNC`, `UV_OFFLINE`). The crews' default LLM (no `llm=` in the
templates) talks to the scripted server through `OPENAI_BASE_URL`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from kitaru_core import Client, configure
from kitaru_core.testing import Rule, Script, ScriptedModelServer, read_request_log

BIN = Path(sys.executable).parent
DECORATOR_IMPORT = "from kitaru_adapters.crewai import durable\n"

CREW_RULES = [
    Rule(
        when_conversation_contains="Conduct a thorough research", text="- LLMs got cheaper\n- LLMs got faster"
    ),
    Rule(
        when_conversation_contains="Review the context you got",
        text="# Report\n\nLLMs got cheaper and faster.",
    ),
]
FLOW_RULES = [
    Rule(when_conversation_contains="Review and edit the blog post", text="# Agents\n\nAgents, polished."),
    Rule(when_conversation_contains="write a full blog post", text="# Agents\n\nAgents, drafted."),
    Rule(when_conversation_contains="Create a detailed outline", text="1. What agents are"),
]


def _environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "KITARU_STORE_URL": f"sqlite:///{tmp_path / 'kitaru.db'}",
        "KITARU_ARTIFACTS_URL": str(tmp_path / "artifacts"),
        "KITARU_INTERACTIVE": "false",
        "OPENAI_API_KEY": "scripted",
        "UV_OFFLINE": "1",
        "UV_NO_SYNC": "1",
        "UV_PROJECT_ENVIRONMENT": str(tmp_path / "project-venv"),
        "CREWAI_DMN": "1",
        **extra,
    }


def create_project(kind: str, name: str, tmp_path: Path) -> Path:
    """Render a template with the `crewai` CLI and install it, offline, into a project venv."""
    arguments = ["crew", name, "--classic", "--skip-provider"] if kind == "crew" else ["flow", name]
    created = subprocess.run(
        [str(BIN / "crewai"), "create", *arguments],
        cwd=tmp_path,
        env=_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    project = tmp_path / name
    venv = tmp_path / "project-venv"
    uv = str(BIN / "uv")
    subprocess.run(
        [uv, "venv", "-q", str(venv), "-p", sys.executable], env=_environment(tmp_path), check=True
    )
    venv_site = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The project venv sees this environment's packages (crewai, kitaru_adapters) through a .pth file.
    here = sysconfig.get_paths()["purelib"]
    Path(venv_site, "_kitaru_test_environment.pth").write_text(f"import site; site.addsitedir({here!r})\n")
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "-q",
            "-p",
            str(venv / "bin" / "python"),
            "--no-deps",
            "--no-build-isolation",
            "-e",
            str(project),
        ],
        env=_environment(tmp_path),
        check=True,
    )
    return project


def add_decorator(source: Path, class_line: str) -> None:
    """The one change: `@durable` on the `@CrewBase` class or the `Flow` class (plus its import)."""
    text = source.read_text()
    target = f"@CrewBase\n{class_line}" if f"@CrewBase\n{class_line}" in text else class_line
    assert text.count(target) == 1, text
    changed = text.replace(target, f"@durable\n{target}")
    shebang, newline, rest = changed.partition("\n") if changed.startswith("#!") else ("", "", changed)
    source.write_text(shebang + newline + DECORATOR_IMPORT + rest)


def crewai_run(project: Path, tmp_path: Path, base_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "crewai"), "run"],
        cwd=project,
        env=_environment(tmp_path, OPENAI_BASE_URL=base_url),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def executions(tmp_path: Path) -> list[object]:
    configure(store_url=f"sqlite:///{tmp_path / 'kitaru.db'}", reset=True)
    try:
        return [Client().get_execution(summary.id) for summary in Client().list_executions()]
    finally:
        configure(reset=True)


@pytest.mark.parametrize(
    ("kind", "name", "crew_file", "class_line", "rules", "tasks", "output_file", "execution_name"),
    [
        ("crew", "demo_crew", "crew.py", "class DemoCrew():", CREW_RULES, 2, "report.md", "crewai:DemoCrew"),
        pytest.param(  # the flow template's crew decorated: the default run has the other two
            "flow",
            "demo_flow",
            "crews/content_crew/content_crew.py",
            "class ContentCrew:",
            FLOW_RULES,
            3,
            "output/post.md",
            "crewai:ContentCrew",
            marks=pytest.mark.slow,
        ),
        (
            "flow",
            "whole_flow",
            "main.py",
            "class ContentFlow(Flow[ContentState]):",
            FLOW_RULES,
            3,
            "output/post.md",
            "crewai_flow:ContentFlow",
        ),
    ],
    ids=["crew-CrewBase-class", "flow-CrewBase-class", "flow-Flow-class"],
)
def test_a_generated_project_runs_durably_with_one_decorator(
    tmp_path: Path,
    kind: str,
    name: str,
    crew_file: str,
    class_line: str,
    rules: list[Rule],
    tasks: int,
    output_file: str,
    execution_name: str,
) -> None:
    project = create_project(kind, name, tmp_path)
    add_decorator(project / "src" / name / crew_file, class_line)

    # First run: the last task's model request finds no rule (HTTP 500), so the crew fails after
    # the earlier tasks' LLM calls were recorded.
    failing = Script(rules=rules[:-1] if kind == "crew" else rules[1:], model_names=("gpt-4.1-mini",))
    with ScriptedModelServer(failing, request_log_path=tmp_path / "failing.jsonl") as server:
        crashed = crewai_run(project, tmp_path, server.base_url)
    assert crashed.returncode != 0 or "error" in (crashed.stdout + crashed.stderr).lower()
    (failed,) = executions(tmp_path)
    assert failed.flow_name == execution_name  # type: ignore[attr-defined]
    assert failed.status == "failed"  # type: ignore[attr-defined]
    completed_before = [call for call in failed.calls if call.status == "completed" and call.kind == "model"]  # type: ignore[attr-defined]
    assert len(completed_before) == tasks - 1

    # Second run of the unchanged command: it resumes, asking only for the missing task's answer.
    full = Script(rules=rules, model_names=("gpt-4.1-mini",))
    with ScriptedModelServer(full, request_log_path=tmp_path / "full.jsonl") as server:
        done = crewai_run(project, tmp_path, server.base_url)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(read_request_log(tmp_path / "full.jsonl")) == 1
    (resumed,) = executions(tmp_path)
    assert resumed.status == "completed"  # type: ignore[attr-defined]
    assert resumed.run_count == 2  # type: ignore[attr-defined]
    served = [call for call in resumed.calls if call.source == "store" and call.kind == "model"]  # type: ignore[attr-defined]
    assert len(served) == tasks - 1
    last_rule_text = rules[-1].text if kind == "crew" else rules[0].text
    assert last_rule_text is not None
    assert (project / output_file).read_text().strip() == last_rule_text.strip()
