# pyright: strict
"""Test helpers for durable agents: a scripted, OpenAI-compatible model server.

`ScriptedModelServer` answers chat-completions requests from a `Script` of `Rule`s, so agent
tests and offline demos run without a real model provider, deterministically across process
restarts. Run it in another process with `python -m kitaru_core.testing.model_server`.

Example:
    ```python
    from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall

    script = Script(
        [
            Rule(when_turn=0, tool_calls=[ScriptedToolCall("get_weather", {"city": "Paris"})]),
            Rule(when_last_tool_result_contains="sunny", text="It is {last_tool_result} in Paris."),
        ]
    )
    with ScriptedModelServer(script, request_log_path="requests.jsonl") as server:
        ...  # point the agent's OpenAI client at server.base_url, with max_retries=0
    ```
"""

from kitaru_core.testing._http import ScriptedModelServer, read_request_log
from kitaru_core.testing._script import Rule, Script, ScriptedToolCall, ScriptedUsage

__all__ = [
    "Rule",
    "Script",
    "ScriptedModelServer",
    "ScriptedToolCall",
    "ScriptedUsage",
    "read_request_log",
]
