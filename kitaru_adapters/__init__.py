"""kitaru-adapters: make agents you already wrote durable with one call.

Each framework has its own subpackage (`kitaru_adapters.pydantic_ai`, ...), imported only when
you use it; this package itself imports no agent framework.
"""

__all__: list[str] = []
