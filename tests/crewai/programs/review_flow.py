"""A durable CrewAI Flow with side effects, an `input()` prompt in a router and an LLM call.

    python review_flow.py --base-url URL --log FILE [--persist DB] [--flow-id ID] [--crash-in-publish]

Each step appends a line to `--log` when its code runs. `--crash-in-publish` SIGKILLs the process
inside the last step. `--persist DB` adds CrewAI's `@persist(SQLiteFlowPersistence(DB))`;
`--flow-id ID` restores that persisted flow with `kickoff(inputs={"id": ID})`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from crewai import LLM
from crewai.flow.flow import Flow, listen, router, start
from crewai.flow.persistence import SQLiteFlowPersistence, persist

from kitaru_adapters.crewai import durable

OPTIONS: dict[str, Any] = {}


def note(line: str) -> None:
    with open(OPTIONS["log"], "a") as file:
        file.write(line + "\n")
        file.flush()
        os.fsync(file.fileno())


class ReviewFlow(Flow[dict[str, Any]]):
    @start()
    def draft(self) -> str:
        note("draft")
        self.state["draft"] = "Refunds now take 2 days."
        print(f"flow_id={self.state['id']}", flush=True)
        return "drafted"

    @router(draft)
    def review(self) -> str:
        answer = input("Publish the draft? ")
        note(f"review {answer.strip()}")
        return "approved" if answer.strip() == "yes" else "rejected"

    @listen("approved")
    def publish(self) -> str:
        note("publish")
        if OPTIONS["crash"]:
            os.kill(os.getpid(), signal.SIGKILL)
        llm = LLM(model="openai/gpt-4o-mini", base_url=OPTIONS["base_url"], api_key="scripted", max_retries=0)
        return str(llm.call(f"Announce: {self.state['draft']}"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--persist")
    parser.add_argument("--flow-id")
    parser.add_argument("--crash-in-publish", action="store_true")
    options = parser.parse_args()
    OPTIONS.update(base_url=options.base_url, log=options.log, crash=options.crash_in_publish)
    flow_class: Any = ReviewFlow
    if options.persist:
        flow_class = persist(SQLiteFlowPersistence(options.persist))(ReviewFlow)
    flow = durable(flow_class())
    result = flow.kickoff(inputs={"id": options.flow_id} if options.flow_id else None)
    print(f"result={result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
