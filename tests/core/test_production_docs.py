"""docs/production.md as written: every command and flag exists, the manifests and the unit parse and agree.

The Kubernetes manifests and the systemd unit cannot run here; they are parsed (YAML with a safe
loader, the unit with configparser), and every `kitaru-adapters` command in them, and in the
page's shell blocks, is parsed by the CLI itself (its options, their types, the subcommands).
The commands also run: the migration Job's, the server Deployment's and the token lines in
tests/server/test_production_docs_serve.py (the server needs the `server` extra, which this
session does not install), the worker Deployment's in tests/core/test_s3_artifacts.py.
"""

from __future__ import annotations

import configparser
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from kitaru_core import _config
from kitaru_core.cli import app

REPO = Path(__file__).resolve().parents[2]
# click's UsageError, from whichever click Typer uses (recent Typer releases carry their own copy)
UsageError: type[Exception] = typer.BadParameter.__mro__[1]
PAGE = REPO / "docs" / "production.md"
# Environment variables the page may set: the core's settings, the server's, and the AWS/fsspec ones
# s3fs reads.
SERVER_VARIABLES = {"KITARU_SERVER_TOKEN", "KITARU_SERVER_ALLOWED_HOSTS", "KITARU_SERVER_MAX_REQUEST_BYTES"}
S3_VARIABLES = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "FSSPEC_S3_ENDPOINT_URL",
}


def _known_variables() -> set[str]:
    return set(_config._ENVIRONMENT.values()) | SERVER_VARIABLES | S3_VARIABLES  # pyright: ignore[reportPrivateUsage]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.DOTALL)


def parse_cli(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse `kitaru-adapters ARGV` as the CLI would (without running it); return the command path and its parameters.

    Raises:
        UsageError: An unknown command or option, a bad value, a missing argument.
    """
    command: Any = typer.main.get_command(app)
    context = command.make_context("kitaru-adapters", list(argv))
    path = ["kitaru-adapters"]
    while hasattr(command, "resolve_command"):  # a group
        remaining = [*context._protected_args, *context.args]  # pyright: ignore[reportPrivateUsage]
        name, sub, rest = command.resolve_command(context, remaining)
        assert name is not None, f"no subcommand in {argv}"
        assert sub is not None, f"no subcommand in {argv}"
        context = sub.make_context(name, rest, parent=context)
        command = sub
        path.append(name)
    return " ".join(path), context.params


def test_the_parser_refuses_what_the_cli_refuses() -> None:
    assert parse_cli(["worker", "--queue", "a", "--concurrency", "4"])[1]["concurrency"] == 4
    with pytest.raises(UsageError):
        parse_cli(["worker", "--no-such-flag"])
    with pytest.raises(UsageError):
        parse_cli(["worker", "--concurrency", "four"])
    with pytest.raises(UsageError):
        parse_cli(["no-such-command"])


def test_every_shell_line_is_a_real_command_option_or_variable() -> None:
    with open(REPO / "pyproject.toml", "rb") as handle:
        extras = set(tomllib.load(handle)["project"]["optional-dependencies"])
    checked = 0
    for block in _blocks("bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            checked += 1
            if words[0] == "kitaru-adapters":
                parse_cli(words[1:])
            elif words[:2] == ["pip", "install"]:
                [requirement] = words[2:]
                name, wanted = re.fullmatch(r"([a-z-]+)\[([a-z0-9,-]+)\]", requirement).groups()  # type: ignore[union-attr]
                assert name == "kitaru-adapters"
                assert set(wanted.split(",")) <= extras, wanted
            elif words[0] == "export":
                [assignment] = words[1:]
                assert assignment.split("=", 1)[0] in _known_variables(), assignment
            else:
                pytest.fail(f"unexpected shell line in docs/production.md: {line!r}")
    assert checked >= 8


def _manifests() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for block in _blocks("yaml"):
        documents += [document for document in yaml.safe_load_all(block) if document]
    return documents


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_the_kubernetes_manifests_parse_and_their_commands_exist() -> None:
    manifests = _manifests()
    kinds = sorted(f"{document['kind']}/{document['metadata']['name']}" for document in manifests)
    assert kinds == [
        "Deployment/kitaru-server",
        "Deployment/kitaru-worker",
        "Job/kitaru-migrate-1-0",
        "Secret/kitaru",
        "Service/kitaru-server",
    ]
    by_name = {document["metadata"]["name"] + "/" + document["kind"]: document for document in manifests}
    secret_keys = set(by_name["kitaru/Secret"]["stringData"])
    commands: dict[str, str] = {}
    for document in manifests:
        if document["kind"] not in {"Deployment", "Job"}:
            continue
        pod = document["spec"]["template"]["spec"]
        [container] = pod["containers"]
        argv = [*container["command"], *container.get("args", [])]
        assert argv[0] == "kitaru-adapters"
        path, _ = parse_cli(argv[1:])
        commands[document["metadata"]["name"]] = path
        for variable in container["env"]:
            assert variable["name"] in _known_variables(), variable
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if reference is not None:
                assert reference == {"name": "kitaru", "key": reference["key"]}
                assert reference["key"] in secret_keys
        if document["metadata"]["name"] == "kitaru-worker":
            _, params = parse_cli(argv[1:])
            # the platform waits longer than the worker gives its runs before SIGKILL
            assert pod["terminationGracePeriodSeconds"] > params["shutdown_timeout_s"] + 10
            assert {"KITARU_STORE_URL", "KITARU_ARTIFACTS_URL"} <= {
                variable["name"] for variable in container["env"]
            }
        if document["metadata"]["name"] == "kitaru-server":
            port = int(_option(argv, "--port"))
            assert container["ports"] == [{"containerPort": port}]
            assert container["readinessProbe"] == {"tcpSocket": {"port": port}}
            service = by_name["kitaru-server/Service"]["spec"]
            assert service["selector"] == document["spec"]["template"]["metadata"]["labels"]
            assert service["ports"][0]["targetPort"] == port
            [mount] = container["volumeMounts"]
            assert _option(argv, "--log-dir").startswith(mount["mountPath"] + "/")
    assert commands == {
        "kitaru-migrate-1-0": "kitaru-adapters migrate",
        "kitaru-worker": "kitaru-adapters worker",
        "kitaru-server": "kitaru-adapters serve",
    }


def test_the_systemd_unit_parses_and_stops_the_worker_with_sigterm_in_time() -> None:
    [block] = _blocks("ini")
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read_string(block)
    assert unit.sections() == ["Unit", "Service", "Install"]
    service = unit["Service"]
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"
    assert service["Restart"] == "always"
    argv = shlex.split(service["ExecStart"])
    assert argv[0].startswith("/")  # systemd wants an absolute path
    assert argv[0].endswith("/kitaru-adapters")
    path, params = parse_cli(argv[1:])
    assert path == "kitaru-adapters worker"
    assert float(service["TimeoutStopSec"]) > params["shutdown_timeout_s"] + 10
    [environment] = [block for block in _blocks("text") if "KITARU_STORE_URL=" in block]
    names = [line.split("=", 1)[0] for line in environment.splitlines() if line.strip()]
    assert set(names) <= _known_variables()
    assert {"KITARU_STORE_URL", "KITARU_ARTIFACTS_URL"} <= set(names)
