"""Many threads call an adapter's `durable()` at once, in a fresh process, then one run is recorded.

    python -m tests.concurrent_durable_program ADAPTER STORE_URL ARTIFACTS_URL  (from the project root)

A fresh process, so the class-level patches `durable()` installs once per process are installed by
the racing threads themselves. Prints one JSON object: the errors the threads raised, whether each
process-wide patch wraps the framework's original exactly once, the run's output, the recorded
calls (key, kind) and how many requests the scripted model server answered.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from typing import Any

import kitaru_core
from kitaru_core import Client
from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall

THREADS = 16
PROMPT = "How is the weather in Paris?"
SCRIPT = Script(
    rules=[
        Rule(when_last_tool_result_contains="sunny", text="It is {last_tool_result}."),
        Rule(
            when_tools_offered="get_weather", tool_calls=[ScriptedToolCall("get_weather", {"city": "Paris"})]
        ),
    ],
    model_names=("gpt-4o-mini",),
)


def race(targets: list[Any], durable: Callable[[Any], Any]) -> list[str]:
    """Call `durable(target)` for every target, each in its own thread, all released at once."""
    barrier = threading.Barrier(len(targets))
    errors: list[str] = []

    def make(target: Any) -> None:
        barrier.wait()
        try:
            durable(target)
        except BaseException as error:  # a RecursionError too
            errors.append(repr(error)[:300])

    threads = [threading.Thread(target=make, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def pydantic_ai(base_url: str) -> dict[str, Any]:
    import asyncio

    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    from kitaru_adapters.pydantic_ai import _agent, durable

    def weather_agent() -> Agent[None, str]:
        model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(base_url=base_url, api_key="scripted"))
        agent: Agent[None, str] = Agent(model, name="weather")

        @agent.tool_plain
        def get_weather(city: str) -> str:
            return f"sunny in {city}"

        return agent

    agents = [weather_agent() for _ in range(THREADS)]
    shared = weather_agent()
    errors = race([*agents, *[shared] * 4], durable)
    output = asyncio.run(agents[0].run(PROMPT)).output
    classes = {type(agent) for agent in [*agents, shared]}
    return {
        "errors": errors,
        "wrapped_once": len(classes) == 1 and len(_agent._subclasses) == 1,  # pyright: ignore[reportPrivateUsage]
        "output": output,
    }


def openai_agents(base_url: str) -> dict[str, Any]:
    from agents import Agent, RunConfig, Runner, function_tool, set_tracing_disabled
    from agents.models.openai_provider import OpenAIProvider
    from agents.run import get_default_agent_runner
    from openai import AsyncOpenAI

    from kitaru_adapters.openai_agents import DurableAgentRunner, durable

    set_tracing_disabled(True)
    before = get_default_agent_runner()

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    agents = [Agent(name="weather", tools=[get_weather]) for _ in range(THREADS)]
    errors = race(agents, durable)
    client = AsyncOpenAI(base_url=base_url, api_key="scripted", max_retries=0)
    config = RunConfig(
        model_provider=OpenAIProvider(openai_client=client, use_responses=False), model="gpt-4o-mini"
    )
    output = Runner.run_sync(agents[0], PROMPT, run_config=config).final_output
    runner = get_default_agent_runner()
    return {
        "errors": errors,
        "wrapped_once": isinstance(runner, DurableAgentRunner)
        and runner.inner is before
        and len({type(agent) for agent in agents}) == 1,
        "output": output,
    }


def crewai(base_url: str) -> dict[str, Any]:
    from crewai import LLM, Agent, Crew, Task
    from crewai.flow.flow import Flow, start
    from crewai.tools import tool
    from crewai.utilities.internal_instructor import InternalInstructor

    from kitaru_adapters.crewai import durable

    to_pydantic, kickoff = InternalInstructor.to_pydantic, Crew.kickoff

    @tool("get_weather")
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    class Weather(Flow[dict[str, Any]]):  # pyright: ignore[reportMissingTypeArgument]
        @start()
        def begin(self) -> str:
            return "begun"

    def crew() -> Crew:
        llm = LLM(model="openai/gpt-4o-mini", base_url=base_url, api_key="scripted", max_retries=0)
        agent = Agent(role="Forecaster", goal="Tell the weather", backstory="b", llm=llm, tools=[get_weather])
        task = Task(name="weather", description=PROMPT, expected_output="The weather.", agent=agent)
        return Crew(name="weather", agents=[agent], tasks=[task], verbose=False)

    crews = [crew() for _ in range(THREADS)]
    flows = [Weather() for _ in range(THREADS // 2)]
    errors = race([*crews, *flows], durable)
    output = crews[0].kickoff().raw
    return {
        "errors": errors,
        "wrapped_once": getattr(InternalInstructor.to_pydantic, "__wrapped__", None) is to_pydantic
        and getattr(Crew.kickoff, "__wrapped__", None) is kickoff
        and len({type(crew) for crew in crews}) == 1,
        "output": output,
    }


def langgraph(base_url: str) -> dict[str, Any]:
    import httpx
    from langchain.agents import create_agent
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import BaseTool, tool
    from langchain_openai import ChatOpenAI

    from kitaru_adapters.langgraph import _model, _tools, durable

    generate, run = BaseChatModel._generate_with_cache, BaseTool.run  # pyright: ignore[reportPrivateUsage]

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    limits = httpx.Limits(max_keepalive_connections=0)
    model = ChatOpenAI(
        model="gpt-4o-mini",
        base_url=base_url,
        api_key="scripted",  # pyright: ignore[reportArgumentType]
        max_retries=0,
        http_client=httpx.Client(limits=limits),
    )
    graphs = [create_agent(model, [get_weather], name="weather") for _ in range(THREADS)]
    errors = race(graphs, durable)
    result = graphs[0].invoke(
        {"messages": [HumanMessage(PROMPT)]}, {"configurable": {"thread_id": "weather"}}
    )
    return {
        "errors": errors,
        "wrapped_once": _model._original["_generate_with_cache"] is generate  # pyright: ignore[reportPrivateUsage]
        and _tools._original["run"] is run  # pyright: ignore[reportPrivateUsage]
        and len({type(graph) for graph in graphs}) == 1,
        "output": result["messages"][-1].content,
    }


ADAPTERS = {
    "pydantic_ai": pydantic_ai,
    "openai_agents": openai_agents,
    "crewai": crewai,
    "langgraph": langgraph,
}


def main() -> None:
    adapter, store_url, artifacts_url = sys.argv[1:4]
    kitaru_core.configure(store_url=store_url, artifacts_url=artifacts_url, reset=True)
    with ScriptedModelServer(SCRIPT) as server:
        report = ADAPTERS[adapter](server.base_url)
        report["requests"] = len(server.request_records)
    report["calls"] = [
        [call.key, call.kind]
        for summary in Client().list_executions()
        for call in Client().get_execution(summary.id).calls
    ]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
