"""A durable CrewAI Flow whose one step kicks off many crews at once (`kickoff_async`).

    python examples/crewai_lead_scoring.py [--base-url URL] [--leads 30] [--plain] [--crash-after K]

Each lead is scored by its own one-agent crew; the step gathers all kickoffs concurrently, so
CrewAI runs them on threads. `@durable` on the Flow class is the one added line: every crew's LLM
request is a checkpoint call of the flow's execution, under a scope keyed by the crew's inputs.
`--plain` runs the same flow without the adapter. Without `--base-url` it starts the project's
scripted model server itself, so it runs offline.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from _runner_support import crash_after
from crewai import LLM, Agent, Crew, Task
from crewai.flow.flow import Flow, start

from kitaru_adapters.crewai import durable
from kitaru_core.testing import Rule, Script, ScriptedModelServer

SCRIPT = Script(rules=[Rule(text="Score: 7 of 10 for {last_user}")], model_names=("gpt-4o-mini",))
BASE_URL = {"url": ""}


def score_crew(lead: int) -> Crew:
    """A one-agent crew that scores one lead."""
    llm = LLM(model="openai/gpt-4o-mini", base_url=BASE_URL["url"], api_key="scripted", max_retries=0)
    scorer = Agent(role="Lead scorer", goal="Score leads", backstory="Sales analyst.", llm=llm)
    task = Task(name="score", description="Score lead {lead}.", expected_output="A score.", agent=scorer)
    return Crew(name="lead_scorer", agents=[scorer], tasks=[task])


class LeadFlow(Flow[dict[str, Any]]):
    """Scores `leads` leads in parallel."""

    @start()
    async def score_all(self) -> list[str]:
        count = int(self.state.get("leads", 30))
        results = await asyncio.gather(
            *(score_crew(i).kickoff_async(inputs={"lead": i}) for i in range(count))
        )
        return [result.raw for result in results]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", help="an OpenAI-compatible server; default: start the scripted one")
    parser.add_argument("--leads", type=int, default=30)
    parser.add_argument("--plain", action="store_true", help="run without the adapter")
    parser.add_argument("--crash-after", type=int, help="SIGKILL after the K-th committed checkpoint call")
    options = parser.parse_args()
    if options.crash_after:
        crash_after(options.crash_after)

    def run(base_url: str) -> list[str]:
        BASE_URL["url"] = base_url
        flow = LeadFlow() if options.plain else durable(LeadFlow())
        return flow.kickoff(inputs={"leads": options.leads})

    if options.base_url is None:
        with ScriptedModelServer(SCRIPT) as server:
            scores = run(server.base_url)
    else:
        scores = run(options.base_url)
    print(f"scored={len(scores)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
