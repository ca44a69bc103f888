"""The public surface: `__all__`, the error hierarchy, and what `import kitaru_core` pulls in."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

import kitaru_core
import kitaru_core.errors
from kitaru_core import _runtime

EXPECTED_ALL = [
    "ApprovalDecision",
    "ApprovalPolicy",
    "ApprovalRequest",
    "ArtifactView",
    "AuditEvent",
    "Budget",
    "BudgetView",
    "CallView",
    "Checkpoint",
    "Client",
    "Codec",
    "CurrentExecution",
    "DiffRow",
    "DiffSide",
    "ExecutionDetail",
    "ExecutionDiff",
    "ExecutionRetryPolicy",
    "ExecutionSummary",
    "Flow",
    "JsonCodec",
    "ModelErrorClass",
    "ModelRetryPolicy",
    "OnInterrupted",
    "RetryPolicy",
    "Settings",
    "Totals",
    "WaitSpec",
    "WaitView",
    "Worker",
    "approval_wait_name",
    "checkpoint",
    "classify_model_error",
    "configure",
    "current_execution",
    "errors",
    "execution",
    "flow",
    "idempotency_key",
    "load",
    "log",
    "log_async",
    "model_retries",
    "named_run",
    "request_approval",
    "request_approvals",
    "save",
    "save_async",
    "scope",
    "wait",
    "wait_all",
    "wait_all_async",
    "wait_async",
]

MOVED_TO_ADAPTERS = [
    "CallUsage",
    "SideEffectPolicy",
    "durable_run",
    "fingerprint",
    "model_retry_policy",
    "request_approval_together",
    "retry_delay_in_call",
    "run_checkpoint",
    "run_checkpoint_async",
    "stop_retries_in_call",
]
"""What 0.1 exported for adapters: out of `__all__`, still importable from `kitaru_core`."""

EXPECTED_ADAPTERS_ALL = [
    "APPROVAL_BATCH_WINDOW_S",
    "MODEL_RESPONSE_OVERRIDE_FORMAT",
    "TOOL_RESULT_OVERRIDE_FORMAT",
    "UNCONVERTED",
    "ApprovalDecision",
    "ApprovalPolicy",
    "ApprovalRequest",
    "CallUsage",
    "DurableSubclasses",
    "ModelResponseOverride",
    "Seam",
    "SideEffectPolicy",
    "ToolCallOverride",
    "ToolResultOverride",
    "approval_timeout_s",
    "approval_wait_name",
    "budget_scope",
    "canonical_json",
    "check_seams",
    "cost_usd",
    "declared_range",
    "durable_run",
    "execution_context",
    "field_names",
    "fields_seam",
    "final_once_relayed",
    "fingerprint",
    "installed_version",
    "jsonable",
    "model_retries",
    "model_retry_policy",
    "per_check",
    "read_model_response_override",
    "read_override",
    "read_tool_result_override",
    "register_durable_subclass",
    "relay_while_running",
    "request_approval",
    "request_approval_together",
    "request_approvals",
    "reset_seam_checks",
    "retry_delay_in_call",
    "run_checkpoint",
    "run_checkpoint_async",
    "scope",
    "seam_check",
    "stable_text",
    "stop_retries_in_call",
]

EXPECTED_ERRORS_ALL = [
    "AdapterError",
    "ArtifactNotFoundError",
    "CallNotFoundError",
    "ConfigurationError",
    "DivergenceError",
    "ExecutionCancelledError",
    "ExecutionError",
    "ExecutionFailedError",
    "ExecutionLockedError",
    "ExecutionNotFoundError",
    "ExecutionWaitingError",
    "InterruptedCallError",
    "InvalidAnswerError",
    "InvalidIdError",
    "KitaruError",
    "LeaseLostError",
    "MigrationError",
    "MissingDependencyError",
    "PendingWait",
    "SerializationError",
    "StoreError",
    "WaitAlreadyAnsweredError",
    "WaitError",
    "WaitNotFoundError",
]

FRAMEWORKS_AND_HEAVY_DEPENDENCIES = [
    "pydantic_ai",
    "openai",
    "agents",
    "crewai",
    "langgraph",
    "langchain_core",
    "sqlalchemy",
    "fsspec",
    "alembic",
]


def test_all_lists_exactly_the_public_names() -> None:
    assert sorted(kitaru_core.__all__) == EXPECTED_ALL
    assert len(set(kitaru_core.__all__)) == len(kitaru_core.__all__)
    # submodules show up as attributes once imported anywhere; of them only `errors` is public
    eager = {
        name
        for name, value in vars(kitaru_core).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "TYPE_CHECKING"
    } | {"errors"}
    lazy = set(kitaru_core._LAZY)  # the client's and the approvals' names, imported on first use
    assert not eager & lazy
    assert eager | lazy == set(EXPECTED_ALL)
    assert not set(kitaru_core._MOVED_TO_ADAPTERS) & (eager | lazy)


@pytest.mark.parametrize("name", MOVED_TO_ADAPTERS)
def test_names_moved_to_the_adapter_api_stay_importable_from_kitaru_core(name: str) -> None:
    """0.1 code importing them from `kitaru_core` keeps working, without a warning; same object."""
    import warnings

    import kitaru_core.adapters

    assert name not in kitaru_core.__all__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        namespace: dict[str, object] = {}
        exec(f"from kitaru_core import {name}", namespace)
    assert namespace[name] is getattr(kitaru_core.adapters, name)


def test_adapters_all_lists_exactly_its_names_and_each_is_importable() -> None:
    import kitaru_core.adapters

    assert sorted(kitaru_core.adapters.__all__) == sorted(EXPECTED_ADAPTERS_ALL)
    for name in EXPECTED_ADAPTERS_ALL:
        namespace: dict[str, object] = {}
        exec(f"from kitaru_core.adapters import {name}", namespace)
        assert namespace[name] is getattr(kitaru_core.adapters, name)
        value = namespace[name]
        if callable(value):
            assert inspect.getdoc(value), f"kitaru_core.adapters.{name} has no docstring"


def test_errors_all_lists_exactly_the_public_names() -> None:
    assert sorted(kitaru_core.errors.__all__) == EXPECTED_ERRORS_ALL
    defined_here = {
        name
        for name, value in vars(kitaru_core.errors).items()
        if not name.startswith("_") and inspect.isclass(value) and value.__module__ == "kitaru_core.errors"
    }
    assert defined_here == set(EXPECTED_ERRORS_ALL)


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_every_public_name_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from kitaru_core import {name}", namespace)
    assert namespace[name] is getattr(kitaru_core, name)


def test_star_imports_give_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from kitaru_core import *", namespace)
    assert set(EXPECTED_ALL) <= set(namespace)
    errors_namespace: dict[str, object] = {}
    exec("from kitaru_core.errors import *", errors_namespace)
    assert set(EXPECTED_ERRORS_ALL) <= set(errors_namespace)


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        kitaru_core.no_such_name  # noqa: B018


def test_every_error_derives_from_kitaru_error() -> None:
    for name in EXPECTED_ERRORS_ALL:
        value = getattr(kitaru_core.errors, name)
        if name == "PendingWait":
            assert not issubclass(value, BaseException)
            continue
        assert issubclass(value, kitaru_core.errors.KitaruError), name
        assert issubclass(value, Exception), name
    assert issubclass(kitaru_core.errors.MissingDependencyError, ImportError)
    assert issubclass(kitaru_core.errors.MigrationError, kitaru_core.errors.StoreError)


def test_runtime_signals_are_not_exceptions() -> None:
    for signal in (_runtime.SuspendExecution, _runtime.CancelExecution, _runtime.LeaseLost):
        assert issubclass(signal, BaseException)
        assert not issubclass(signal, Exception), signal
    caught_by_except_exception = False
    try:
        try:
            raise _runtime.SuspendExecution("e")
        except Exception:
            caught_by_except_exception = True
    except _runtime.SuspendExecution:
        pass
    assert not caught_by_except_exception


def _modules_loaded_by(code: str) -> list[str]:
    probe = (
        f"{code}\n"
        "import json, sys\n"
        f"names = {FRAMEWORKS_AND_HEAVY_DEPENDENCIES!r}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(names))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_kitaru_core_imports_no_framework_nor_storage_library() -> None:
    assert _modules_loaded_by("import kitaru_core") == []


def test_import_kitaru_core_adapters_imports_no_framework() -> None:
    assert _modules_loaded_by("import kitaru_core.adapters") == []


def test_import_kitaru_core_does_not_import_the_adapter_api() -> None:
    assert (
        _modules_loaded_by("import kitaru_core; import sys; assert 'kitaru_core.adapters' not in sys.modules")
        == []
    )


def test_import_kitaru_adapters_star_imports_no_framework() -> None:
    assert _modules_loaded_by("from kitaru_adapters import *") == []


def test_the_probe_would_see_an_imported_module() -> None:
    assert _modules_loaded_by("import kitaru_core, sqlalchemy") == ["sqlalchemy"]
