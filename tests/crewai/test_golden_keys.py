"""Golden keys and fingerprints of CrewAI LLM calls and tool calls, plain and streamed.

If this test fails, a CrewAI upgrade or a change of ours altered how the adapter keys or
fingerprints calls. Every execution already in flight would then run its calls again (a new key)
or supersede them (a new fingerprint) when resumed: the model is paid again and tools act twice.
Change the expected values only on purpose (say so in the release notes); when only a framework
release changes them, pin the new values for that release range next to the old ones.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from crewai import Crew

from kitaru_adapters.crewai import durable
from kitaru_core import Client, execution

from .conftest import DESK, ModelServer

OUTPUT = "Done: refunded 25 USD for order 7"
# The order desk in native tool-calling mode: 4 LLM calls, 2 parallel lookups, 1 refund. Sorted by
# key (the two lookups run in parallel, so they are committed in either order).
EXPECTED = [
    ("llm:2e37db20b1e3f22d", "2e37db20b1e3f22d6ba7cad26fafe50655889e237c7aad8f1d25f3284ba28b1c"),
    ("llm:940d114d5af1565d", "940d114d5af1565dc5151476f4d99289b7a92de82b12b1daa775da16ffc4a8c4"),
    ("llm:d68102bb669d8fed", "d68102bb669d8fed43320d3d97290d4d11af522a39cd83de62d4b0b729453e12"),
    ("llm:ffac2dc8e9ee39c6", "ffac2dc8e9ee39c63b873a294a2ac96bd0264a58a84a757f6b39836a11241943"),
    (
        "tool:lookup_order:lookup:bd91a1a358d3",
        "bd91a1a358d3fce315024db3a4590f165fab0c47b46a1d5d20907b69fca9d1e8",
    ),
    (
        "tool:lookup_order:lookup:d9daa6a9a89b",
        "d9daa6a9a89b01ef8ce77901617928983cba812d17c354636a32529dd0c7ca92",
    ),
    ("tool:refund:refund:75fad20d6b60", "75fad20d6b60b02a3fc4f31a9ba2e490fa5aafdba69b774f26c230afe7884ac7"),
]
# A kickoff inside an execution has its own scope: the crew's name and a digest of its inputs.
KICKOFF_SCOPE = "crewai:order_desk:9ec90aba908b/"


def close_clients(crew: Crew) -> None:
    """Close the crew's HTTP clients: one collected with an open connection warns (an error here)."""
    for agent in crew.agents:
        client = getattr(vars(agent)["llm"].wrapped, "_client", None)
        if client is not None:
            client.close()


def recorded(execution_id: str) -> list[tuple[str, str | None]]:
    return sorted((call.call_key, call.fingerprint) for call in Client().store.load_calls(execution_id))


def test_plain_kickoff_keys_and_fingerprints(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path
) -> None:
    crew = durable(DESK["build_crew"](model_server.base_url, "native"))
    assert crew.kickoff(inputs={"mode": "native"}).raw == OUTPUT
    close_clients(crew)
    [summary] = Client().list_executions()
    assert summary.flow_name == "crewai:order_desk"
    assert recorded(summary.id) == EXPECTED, f"crewai {version('crewai')}"


def test_streamed_kickoff_keys_and_fingerprints(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path
) -> None:
    crew = durable(DESK["build_crew"](model_server.base_url, "native"))
    crew.stream = True
    with execution("golden-streamed"):
        streamed = crew.kickoff(inputs={"mode": "native"})
        assert list(streamed)
    assert streamed.result.raw == OUTPUT
    close_clients(crew)
    # Streamed LLM calls key and fingerprint like plain ones: a run may resume in the other mode.
    assert recorded("golden-streamed") == [(f"{KICKOFF_SCOPE}{key}", value) for key, value in EXPECTED], (
        f"crewai {version('crewai')}"
    )
