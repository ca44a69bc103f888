"""Tests of the scripted OpenAI-compatible model server, through the real `openai` client over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from kitaru_core.testing import (
    Rule,
    Script,
    ScriptedModelServer,
    ScriptedToolCall,
    ScriptedUsage,
    read_request_log,
)

CORE_DIRECTORY = Path(__file__).resolve().parents[2] / "core"

WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def weather_script() -> Script:
    return Script(
        [
            Rule(
                when_last_user_contains="weather",
                when_turn=0,
                when_tools_offered="get_weather",
                tool_calls=[ScriptedToolCall("get_weather", {"city": "Paris"})],
            ),
            Rule(
                when_last_tool_result_contains="sunny",
                text="The tool says: {last_tool_result}. You asked: {last_user}",
            ),
            Rule(when_last_tool_result_contains="rain", text="Take an umbrella."),
            Rule(when_last_user_contains="hello", text="Hello there, how can I help?"),
        ]
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(weather_script(), request_log_path=tmp_path / "requests.jsonl") as running:
        yield running


@pytest.fixture
def client(server: ScriptedModelServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=30) as created:
        yield created


def user(text: str) -> ChatCompletionMessageParam:
    return {"role": "user", "content": text}


def weather_conversation_after_tool(result: str, call_id: str) -> list[ChatCompletionMessageParam]:
    return [
        {"role": "system", "content": "You are a weather bot."},
        user("What is the weather in Paris?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": result},
    ]


def test_text_reply(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="my-model", messages=[user("hello!")])

    choice = completion.choices[0]
    assert choice.message.content == "Hello there, how can I help?"
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.model == "my-model"
    assert completion.created == 0
    assert completion.id.startswith("chatcmpl-")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len("hello!") // 4 + 1
    assert completion.usage.completion_tokens == len("Hello there, how can I help?") // 4 + 1
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )

    again = client.chat.completions.create(model="my-model", messages=[user("hello!")])
    assert again.id == completion.id
    assert server.request_count == 2
    assert server.request_bodies[0]["messages"] == [user("hello!")]


def test_tool_call_reply_has_deterministic_id(tmp_path: Path) -> None:
    messages = [user("What is the weather in Paris?")]
    call_ids: list[str] = []
    for _ in range(2):
        with (
            ScriptedModelServer(weather_script()) as server,
            openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client,
        ):
            completion = client.chat.completions.create(
                model="scripted", messages=messages, tools=[WEATHER_TOOL]
            )
            choice = completion.choices[0]
            assert choice.finish_reason == "tool_calls"
            assert choice.message.content is None
            assert choice.message.tool_calls is not None
            [call] = choice.message.tool_calls
            assert call.type == "function"
            assert call.function.name == "get_weather"
            assert json.loads(call.function.arguments) == {"city": "Paris"}
            call_ids.append(call.id)

            other = client.chat.completions.create(
                model="scripted", messages=[user("And the weather in Rome?")], tools=[WEATHER_TOOL]
            )
            assert other.choices[0].message.tool_calls is not None
            assert other.choices[0].message.tool_calls[0].id != call.id

    assert call_ids[0] == call_ids[1]
    assert call_ids[0].startswith("call_")
    assert len(call_ids[0]) == len("call_") + 24

    fixed = Script([Rule(tool_calls=[ScriptedToolCall("get_weather", {}, id="call_fixed")])])
    with (
        ScriptedModelServer(fixed) as server,
        openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client,
    ):
        completion = client.chat.completions.create(model="scripted", messages=messages)
        assert completion.choices[0].message.tool_calls is not None
        [fixed_call] = completion.choices[0].message.tool_calls
        assert fixed_call.type == "function"
        assert fixed_call.id == "call_fixed"
        assert fixed_call.function.arguments == "{}"


def test_multi_turn_rule_selection_uses_tool_results(
    server: ScriptedModelServer, client: openai.OpenAI
) -> None:
    first = client.chat.completions.create(
        model="scripted", messages=[user("What is the weather in Paris?")], tools=[WEATHER_TOOL]
    )
    assert first.choices[0].message.tool_calls is not None
    call_id = first.choices[0].message.tool_calls[0].id

    sunny = client.chat.completions.create(
        model="scripted",
        messages=weather_conversation_after_tool("sunny, 24 C", call_id),
        tools=[WEATHER_TOOL],
    )
    assert sunny.choices[0].message.content == (
        "The tool says: sunny, 24 C. You asked: What is the weather in Paris?"
    )
    rainy = client.chat.completions.create(
        model="scripted",
        messages=weather_conversation_after_tool("heavy rain", call_id),
        tools=[WEATHER_TOOL],
    )
    assert rainy.choices[0].message.content == "Take an umbrella."

    # A tool result before the latest user message does not count as "the last tool result".
    later = [*weather_conversation_after_tool("sunny", call_id), user("hello again")]
    greeting = client.chat.completions.create(model="scripted", messages=later)
    assert greeting.choices[0].message.content == "Hello there, how can I help?"

    # when_tools_offered: without the tool, the first rule does not match (nor does any other).
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="scripted", messages=[user("What is the weather?")])

    assert [record["matched_rule"] for record in server.request_records] == [0, 1, 2, 3, None]
    assert [record["turn"] for record in server.request_records] == [0, 1, 1, 1, 0]


def test_conversation_contains_tells_apart_conversations_with_the_same_last_user_message() -> None:
    # ReAct frameworks end every follow-up with the same user prompt; the task is in an earlier message.
    follow_up = "Analyze the tool result."
    script = Script(
        [
            Rule(when_conversation_contains="Task: refund", when_turn=1, text="refund done"),
            Rule(when_conversation_contains="Task: lookup", when_turn=1, text="lookup done"),
        ]
    )
    assert Script.from_dict(script.to_dict()) == script
    with ScriptedModelServer(script) as running:
        client = openai.OpenAI(base_url=running.base_url, api_key="test", max_retries=0)
        for task, expected in [("lookup", "lookup done"), ("refund", "refund done")]:
            messages: list[ChatCompletionMessageParam] = [
                {"role": "system", "content": f"Task: {task}"},
                {"role": "assistant", "content": "Action: search"},
                user(follow_up),
            ]
            reply = client.chat.completions.create(model="scripted", messages=messages)
            assert reply.choices[0].message.content == expected
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="scripted",
                messages=[{"role": "assistant", "content": "x"}, user(follow_up)],
            )
        client.close()


def test_content_parts_and_explicit_usage() -> None:
    script = Script(
        [
            Rule(
                when_last_user_contains="parts",
                text="ok",
                usage=ScriptedUsage(prompt_tokens=7, completion_tokens=3),
            )
        ]
    )
    with (
        ScriptedModelServer(script) as server,
        openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client,
    ):
        completion = client.chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": [{"type": "text", "text": "content in parts"}]}],
        )
    assert completion.choices[0].message.content == "ok"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 3)


def test_streaming_text(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="scripted",
        messages=[user("hello")],
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        chunks = list(stream)

    content_chunks = [
        chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content
    ]
    assert len(content_chunks) > 1
    assert "".join(content_chunks) == "Hello there, how can I help?"
    assert chunks[0].choices[0].delta.role == "assistant"
    finish_reasons = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finish_reasons[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len("Hello there, how can I help?") // 4 + 1
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert len({chunk.id for chunk in chunks}) == 1
    assert server.request_records[-1]["streamed"] is True

    without_usage = client.chat.completions.create(model="scripted", messages=[user("hello")], stream=True)
    with without_usage:
        assert all(chunk.choices for chunk in without_usage)


def test_streaming_tool_calls() -> None:
    script = Script(
        [
            Rule(
                tool_calls=[
                    ScriptedToolCall("get_weather", {"city": "Paris", "unit": "celsius", "days": 3}),
                    ScriptedToolCall("get_time", {"timezone": "Europe/Paris"}),
                ]
            )
        ]
    )
    with (
        ScriptedModelServer(script) as server,
        openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as stream_client,
    ):
        messages = [user("What is the weather in Paris?")]
        stream = stream_client.chat.completions.create(
            model="scripted",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        with stream:
            chunks = list(stream)
        non_streamed = stream_client.chat.completions.create(model="scripted", messages=messages)

    calls: dict[int, dict[str, str]] = {}
    argument_piece_count = 0
    for chunk in chunks:
        if not chunk.choices or not chunk.choices[0].delta.tool_calls:
            continue
        for delta in chunk.choices[0].delta.tool_calls:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            if delta.id:
                call["id"] = delta.id
            if delta.function and delta.function.name:
                call["name"] = delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
                argument_piece_count += 1

    assert argument_piece_count > 2
    assert [calls[index]["name"] for index in sorted(calls)] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "celsius", "days": 3}
    assert json.loads(calls[1]["arguments"]) == {"timezone": "Europe/Paris"}
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None

    # Streamed and non-streamed replies to the same conversation carry the same ids.
    assert non_streamed.choices[0].message.tool_calls is not None
    assert [call.id for call in non_streamed.choices[0].message.tool_calls] == [
        calls[0]["id"],
        calls[1]["id"],
    ]


def test_no_matching_rule_names_the_prompt(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="scripted", messages=[user("an unscripted question")])
    assert "an unscripted question" in str(raised.value)
    assert "No rule of the script" in str(raised.value)

    with pytest.raises(openai.InternalServerError, match="another unscripted"):
        client.chat.completions.create(model="scripted", messages=[user("another unscripted")], stream=True)

    assert server.request_count == 2
    assert server.request_log_path is not None
    records = read_request_log(server.request_log_path)
    assert [record["reply_kind"] for record in records] == ["no_match", "no_match"]
    assert [record["status"] for record in records] == [500, 500]
    assert records[0]["last_user"] == "an unscripted question"


def test_models_health_and_invalid_requests(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == ["scripted"]
    root = server.base_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/health", timeout=10) as response:
        assert json.loads(response.read()) == {"status": "ok"}

    request = urllib.request.Request(
        f"{root}/chat/completions", data=b"not json", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 400
    raised.value.close()
    assert server.request_records[-1]["reply_kind"] == "invalid_request"


def test_request_log_tolerates_a_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    assert read_request_log(path) == []
    path.write_text('{"sequence": 1}\n{"sequence": 2}\n{"sequence": ', encoding="utf-8")
    assert read_request_log(path) == [{"sequence": 1}, {"sequence": 2}]
    path.write_text('{"sequence": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match="Line 2"):
        read_request_log(path)


def test_refuses_non_loopback_addresses() -> None:
    for host in ("0.0.0.0", "", "192.168.1.10", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            ScriptedModelServer(weather_script(), host=host)
    server = ScriptedModelServer(weather_script(), host="localhost")
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.port
    with server:
        assert server.base_url.startswith("http://127.0.0.1:")
    server.stop()


def test_script_round_trips_through_json(tmp_path: Path) -> None:
    script = Script(
        [
            *weather_script().rules,
            Rule(
                when_turn=2,
                text="done",
                tool_calls=[ScriptedToolCall("finish", {"ok": True}, id="call_1")],
                usage=ScriptedUsage(prompt_tokens=1, completion_tokens=2),
            ),
            Rule(text="fallback"),
        ],
        model_names=["scripted", "other"],
    )
    path = tmp_path / "script.json"
    script.to_json(path)
    assert Script.from_json(path) == script
    assert Script.from_json(json.loads(path.read_text(encoding="utf-8"))) == script
    assert Script.from_json([{"text": "only"}]) == Script([Rule(text="only")])

    with pytest.raises(ValueError, match="when_last_user_contain"):
        Script.from_json({"rules": [{"when_last_user_contain": "typo", "text": "x"}]})
    with pytest.raises(ValueError, match="needs a reply"):
        Script.from_json({"rules": [{"when_turn": 1}]})
    with pytest.raises(ValueError, match="not JSON-serializable"):
        ScriptedToolCall("tool", {"value": object()})


def start_server_process(tmp_path: Path, script: Script) -> tuple[subprocess.Popen[bytes], int, Path]:
    script_path = tmp_path / "script.json"
    script.to_json(script_path)
    request_log = tmp_path / "requests.jsonl"
    port_file = tmp_path / "port.txt"
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(CORE_DIRECTORY), *filter(None, [environment.get("PYTHONPATH")])]
    )
    stderr_path = tmp_path / "server.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kitaru_core.testing.model_server",
                "--script",
                str(script_path),
                "--port",
                "0",
                "--request-log",
                str(request_log),
                "--port-file",
                str(port_file),
            ],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"The server process did not start: {stderr_path.read_text(encoding='utf-8')}")
        time.sleep(0.05)
    return process, int(port_file.read_text(encoding="utf-8")), request_log


def test_request_log_survives_sigkill_of_server_process(tmp_path: Path) -> None:
    process, port, request_log = start_server_process(tmp_path, weather_script())
    try:
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="test", max_retries=0) as client:
            completion = client.chat.completions.create(
                model="scripted", messages=[user("What is the weather in Paris?")], tools=[WEATHER_TOOL]
            )
            stream = client.chat.completions.create(
                model="scripted",
                messages=[user("hello")],
                stream=True,
                stream_options={"include_usage": True},
            )
            with stream:
                streamed_text = "".join(
                    chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices
                )
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert streamed_text == "Hello there, how can I help?"
    records = read_request_log(request_log)
    assert len(records) == 2
    assert [record["sequence"] for record in records] == [1, 2]
    assert [record["streamed"] for record in records] == [False, True]
    assert [record["reply_kind"] for record in records] == ["tool_calls", "text"]
    assert [record["matched_rule"] for record in records] == [0, 3]
    assert records[0]["last_user"] == "What is the weather in Paris?"
    assert records[0]["pid"] == process.pid

    # The tool-call id is the same in another process for the same conversation.
    with (
        ScriptedModelServer(weather_script()) as server,
        openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client,
    ):
        in_process = client.chat.completions.create(
            model="scripted", messages=[user("What is the weather in Paris?")], tools=[WEATHER_TOOL]
        )
    assert completion.choices[0].message.tool_calls is not None
    assert in_process.choices[0].message.tool_calls is not None
    assert completion.choices[0].message.tool_calls[0].id == in_process.choices[0].message.tool_calls[0].id


def test_server_process_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    process, port, _ = start_server_process(tmp_path, weather_script())
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- pydantic-ai against the scripted server -------------------------------------------------------


def pydantic_ai_script() -> Script:
    return Script(
        [
            Rule(
                when_turn=0,
                when_tools_offered="get_weather",
                tool_calls=[ScriptedToolCall("get_weather", {"city": "Paris"})],
            ),
            Rule(when_last_tool_result_contains="Paris", text="Agent says: {last_tool_result}"),
        ]
    )


def make_agent(base_url: str) -> tuple[Any, Any]:
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    openai_client = openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0)
    model = OpenAIChatModel("scripted", provider=OpenAIProvider(openai_client=openai_client))
    agent = Agent(model, instructions="You report the weather.")

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """Get the weather of a city."""
        return f"sunny in {city}"

    return agent, openai_client


def test_pydantic_ai_run_sync(tmp_path: Path) -> None:
    pytest.importorskip("pydantic_ai")
    # run_sync runs on the current event loop (creating one if needed) and leaves it open; own it here
    # so that the loop and the client's connections are closed before the test ends.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        with ScriptedModelServer(pydantic_ai_script(), request_log_path=tmp_path / "log.jsonl") as server:
            agent, openai_client = make_agent(server.base_url)
            try:
                result = agent.run_sync("What is the weather in Paris?")
            finally:
                loop.run_until_complete(openai_client.close())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()
    assert result.output == "Agent says: sunny in Paris"
    records = read_request_log(tmp_path / "log.jsonl")
    assert [record["reply_kind"] for record in records] == ["tool_calls", "text"]
    assert [record["streamed"] for record in records] == [False, False]


def test_pydantic_ai_run_stream(tmp_path: Path) -> None:
    pytest.importorskip("pydantic_ai")

    async def run(base_url: str) -> tuple[list[str], str]:
        agent, openai_client = make_agent(base_url)
        async with openai_client, agent.run_stream("What is the weather in Paris?") as streamed:
            pieces = [piece async for piece in streamed.stream_text(delta=True)]
            output = await streamed.get_output()
        return pieces, output

    with ScriptedModelServer(pydantic_ai_script(), request_log_path=tmp_path / "log.jsonl") as server:
        pieces, output = asyncio.run(run(server.base_url))
    assert output == "Agent says: sunny in Paris"
    assert "".join(pieces) == output
    records = read_request_log(tmp_path / "log.jsonl")
    assert [record["reply_kind"] for record in records] == ["tool_calls", "text"]
    assert [record["streamed"] for record in records] == [True, True]


# -- the Responses API ---------------------------------------------------------------------------

RESPONSES_WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}


def test_responses_text_reply_and_usage(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    response = client.responses.create(model="gpt-4o", input="hello!", instructions="Be kind.")

    assert response.output_text == "Hello there, how can I help?"
    assert response.status == "completed"
    assert response.model == "gpt-4o"
    assert response.id.startswith("resp_")
    [message] = response.output
    assert message.type == "message"
    assert message.role == "assistant"
    assert response.usage is not None
    assert response.usage.input_tokens == (len("Be kind.") + len("hello!")) // 4 + 1
    assert response.usage.output_tokens == len("Hello there, how can I help?") // 4 + 1
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.usage.input_tokens_details.cached_tokens == 0

    again = client.responses.create(model="gpt-4o", input="hello!", instructions="Be kind.")
    assert again.id == response.id
    [first, _second] = server.request_records
    assert first["path"] == "/v1/responses"
    assert first["last_user"] == "hello!"
    assert first["turn"] == 0
    assert first["reply_kind"] == "text"


def test_responses_tool_call_round_trip_matches_the_same_rules_as_chat(
    server: ScriptedModelServer, client: openai.OpenAI
) -> None:
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.responses.create(model="gpt-4o", input=question, tools=[RESPONSES_WEATHER_TOOL])  # type: ignore[arg-type]
    [call] = first.output
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id.startswith("call_")
    assert call.id is not None
    assert call.id.startswith("fc_")

    # The same conversation over chat completions gets the same tool-call id: one script, both APIs.
    chat = client.chat.completions.create(model="scripted", messages=question, tools=[WEATHER_TOOL])  # type: ignore[arg-type]
    assert chat.choices[0].message.tool_calls is not None
    assert chat.choices[0].message.tool_calls[0].id == call.call_id

    follow_up: list[Any] = [
        *question,
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24 C"},
    ]
    sunny = client.responses.create(model="gpt-4o", input=follow_up, tools=[RESPONSES_WEATHER_TOOL])  # type: ignore[arg-type]
    assert sunny.output_text == "The tool says: sunny, 24 C. You asked: What is the weather in Paris?"
    assert server.request_records[-1]["turn"] == 1  # the function call counted as one assistant turn

    # when_tools_offered reads the Responses API's flat function tools: without the tool, no rule matches.
    with pytest.raises(openai.InternalServerError, match="What is the weather"):
        client.responses.create(model="gpt-4o", input=question)  # type: ignore[arg-type]


def test_responses_streams_the_real_event_sequence(client: openai.OpenAI) -> None:
    with client.responses.stream(model="gpt-4o", input="hello there") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [event.type for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 6,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == "Hello there, how can I help?"
    assert final.output_text == "Hello there, how can I help?"
    assert final.usage is not None
    assert final.usage.output_tokens > 0

    with client.responses.stream(
        model="gpt-4o",
        input="What is the weather in Paris?",
        tools=[RESPONSES_WEATHER_TOOL],  # type: ignore[list-item]
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    arguments = "".join(
        event.delta for event in events if event.type == "response.function_call_arguments.delta"
    )
    assert kinds.count("response.function_call_arguments.delta") == 2
    assert json.loads(arguments) == {"city": "Paris"}
    [call] = final.output
    assert call.type == "function_call"
    assert call.status == "completed"


def test_responses_structured_output() -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    script = Script(
        [
            Rule(when_last_user_contains="Paris", text='{"name": "Paris", "population": 2100000}'),
            Rule(text="not JSON at all"),
        ]
    )
    with (
        ScriptedModelServer(script) as server,
        openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client,
    ):
        parsed = client.responses.parse(model="gpt-4o", input="Tell me about Paris", text_format=City)
        assert parsed.output_parsed == City(name="Paris", population=2_100_000)
        assert server.request_bodies[0]["text"]["format"]["type"] == "json_schema"
        with pytest.raises(openai.InternalServerError, match="not JSON"):
            client.responses.parse(model="gpt-4o", input="Tell me about Rome", text_format=City)
        with pytest.raises(openai.BadRequestError, match="input"):
            client.responses.create(model="gpt-4o", input=42)  # type: ignore[arg-type]


def test_responses_async_client_stream_and_developer_messages() -> None:
    script = Script([Rule(when_conversation_contains="Speak French", text="Bonjour {last_user}")])

    async def run() -> list[str]:
        with ScriptedModelServer(script) as server:
            async with openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client:
                stream = await client.responses.create(
                    model="gpt-4o",
                    input=[
                        {"role": "developer", "content": "Speak French"},
                        {
                            "type": "message",
                            "role": "user",
                            "content": [{"type": "input_text", "text": "Ana"}],
                        },
                    ],
                    stream=True,
                )
                return [event.delta async for event in stream if event.type == "response.output_text.delta"]

    assert "".join(asyncio.run(run())) == "Bonjour Ana"
