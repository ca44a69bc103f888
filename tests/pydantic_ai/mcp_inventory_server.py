"""A tiny MCP server (stdio) for the adapter tests: `python mcp_inventory_server.py COUNTER_FILE`.

Each call of its `stock` tool appends a line to COUNTER_FILE, so a test can count tool bodies.
"""

import sys

from mcp.server.mcpserver import MCPServer

COUNTER_FILE = sys.argv[1]
server = MCPServer("inventory")


@server.tool()
def stock(item: str) -> int:
    """How many of an item are in stock."""
    with open(COUNTER_FILE, "a", encoding="utf-8") as counter:
        counter.write(f"stock:{item}\n")
    return 7


if __name__ == "__main__":
    server.run()
