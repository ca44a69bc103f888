"""Replay: a new execution that reuses another's stored calls up to a chosen one (`Client.replay`).

Everything here is checked before the new execution is created, so a bad request (an unknown
call key, an override the codec cannot store, an input the flow does not take) creates nothing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kitaru_core._overrides import model_response_override, tool_result_override
from kitaru_core._records import CallRecord, ExecutionRecord, StoredValue, WaitRecord
from kitaru_core._serialization import JSON_FORMAT, TYPED_FORMAT, JsonCodec
from kitaru_core._store import Store
from kitaru_core.errors import CallNotFoundError, ConfigurationError, SerializationError

ADAPTER_FORMAT_PREFIX = JSON_FORMAT + ":"
"""Stored formats `json:<framework>.<Type>` belong to an adapter's codec (a model response, a tool outcome)."""

USER_KIND = "user"
"""The kind of a plain `@checkpoint` call (adapters record `model`, `tool`, `mcp`)."""

MODEL_KIND = "model"
"""The kind of an adapter's model request: its override is a model response."""

TOOL_KINDS = frozenset({"tool", "mcp"})
"""The kinds of an adapter's tool calls: their override is a plain JSON result."""


def is_adapter_format(format: str) -> bool:
    """Whether a stored format is an adapter's own (`json:pydantic_ai.ToolOutcome`...).

    Values written by 0.1 for plain checkpoints are `json:<module>:<class>` (two colons) and are not.
    """
    return format.startswith(ADAPTER_FORMAT_PREFIX) and ":" not in format[len(ADAPTER_FORMAT_PREFIX) :]


@dataclass
class ReplayPlan:
    """What a replay copies into its new execution, checked and ready to write.

    Attributes:
        source: The execution replayed.
        calls: The calls to copy (overridden outputs applied), in timeline order.
        waits: The answered waits to copy (overridden answers applied).
        inputs_value: The new execution's stored inputs (overridden inputs applied).
        first_live: The chosen call (the first to run live again), or `None` (reuse every completed call).
        overridden: The override keys, each with `call` or `wait`.
    """

    source: ExecutionRecord
    calls: list[CallRecord]
    waits: list[WaitRecord]
    inputs_value: StoredValue | None
    first_live: CallRecord | None
    overridden: dict[str, str]


def find_call(execution_id: str, recorded: Sequence[CallRecord], from_call: str | int) -> CallRecord:
    """The call `from_call` names: a sequence number (`#` in the timeline) or a call key.

    Raises:
        CallNotFoundError: No call has that sequence number.
        ConfigurationError: No call has that key (the message lists some keys).
    """
    if isinstance(from_call, int) and not isinstance(from_call, bool):
        for call in recorded:
            if call.sequence == from_call:
                return call
        raise CallNotFoundError(execution_id, from_call)
    matches = [call for call in recorded if call.call_key == from_call]
    if not matches:
        raise ConfigurationError(
            f"Execution {execution_id!r} has no checkpoint call with key {from_call!r}. "
            f"Its keys: {_some_keys(recorded)}. Name the call by its key or by its # in: "
            f"kitaru-adapters executions show {execution_id}"
        )
    return max(matches, key=lambda call: call.sequence)


def _some_keys(recorded: Sequence[CallRecord]) -> str:
    keys = [repr(call.call_key) for call in recorded[:20]]
    more = f" and {len(recorded) - 20} more" if len(recorded) > 20 else ""
    return (", ".join(keys) or "none") + more


def plan_replay(
    store: Store,
    execution_id: str,
    *,
    from_call: str | int | None,
    overrides: Mapping[str, Any] | None,
    inputs: Mapping[str, Any] | None,
    parameters: Sequence[str] | None,
    decode_inputs: Any = None,
) -> ReplayPlan:
    """Check a replay and work out what it copies; writes nothing.

    Args:
        store: The store of both executions.
        execution_id: The execution to replay.
        from_call: The first call to run live again (sequence number or key); `None`: none.
        overrides: New stored outputs by call key, or new answers by wait name.
        inputs: New values of some of the flow's inputs, by parameter name.
        parameters: The flow's parameter names (when its `@flow` imports), to check `inputs` by.
        decode_inputs: `Flow.decode_inputs` of the imported flow, to validate `inputs` into the
            parameters' annotations; `None`: stored as given.

    Raises:
        ExecutionNotFoundError: No such execution.
        CallNotFoundError: `from_call` is a sequence number no call has.
        ConfigurationError: `from_call` or an override names no call or wait; an adapter call's
            override does not fit it (see `_override_call`); an input names no parameter of the flow.
        InvalidAnswerError: An overridden wait answer does not satisfy the wait's schema.
        SerializationError: An override or input cannot be stored.
    """
    source = store.get_execution(execution_id)
    recorded = store.load_calls(execution_id)
    first_live = find_call(execution_id, recorded, from_call) if from_call is not None else None
    cutoff_sequence = first_live.sequence if first_live is not None else None
    # waits reached before the chosen call keep their answers; later ones are asked again
    cutoff_epoch_s = first_live.started_at_epoch_s if first_live is not None else float("inf")
    calls = {
        call.call_key: call
        for call in recorded
        if call.status == "completed" and (cutoff_sequence is None or call.sequence < cutoff_sequence)
    }
    waits = {
        wait.name: wait
        for wait in store.list_waits(execution_id, status="answered")
        if wait.created_at_epoch_s < cutoff_epoch_s
    }
    overridden: dict[str, str] = {}
    if overrides:
        all_waits = {wait.name: wait for wait in store.list_waits(execution_id)}
        latest: dict[str, CallRecord] = {}
        for call in recorded:
            latest[call.call_key] = call
        for key, value in overrides.items():
            if key in latest:
                call = _override_call(store, execution_id, latest[key], value)
                calls[key] = call
                overridden[key] = "call"
            elif key in all_waits:
                waits[key] = _override_wait(execution_id, all_waits[key], value)
                overridden[key] = "wait"
            else:
                raise ConfigurationError(
                    f"Cannot override {key!r}: execution {execution_id!r} has no checkpoint call with that "
                    f"key and no wait with that name. Its call keys: {_some_keys(recorded)}; its waits: "
                    f"{', '.join(repr(name) for name in all_waits) or 'none'}."
                )
    inputs_value = _stored_inputs(source)
    if inputs:
        inputs_value = _override_inputs(store, source, inputs, parameters, decode_inputs)
    return ReplayPlan(
        source=source,
        calls=sorted(calls.values(), key=lambda call: call.sequence),
        waits=sorted(waits.values(), key=lambda wait: wait.created_at_epoch_s),
        inputs_value=inputs_value,
        first_live=first_live,
        overridden=overridden,
    )


def _override_call(store: Store, execution_id: str, call: CallRecord, value: Any) -> CallRecord:
    """A copy of `call` that stores `value` as its output, served by key (no fingerprint).

    A model request's override is a model response (text and/or tool calls) and a tool call's, when its
    adapter stores it in its own format, a plain JSON result: both are stored in the neutral forms of
    `kitaru_core._overrides`, which the adapter converts to its framework's types when it serves them.
    """
    stored_format = call.output.format if call.output is not None else None
    adapter_owned = (stored_format is not None and is_adapter_format(stored_format)) or (
        stored_format is None and call.kind != USER_KIND
    )
    if call.kind == MODEL_KIND:
        format_, payload = model_response_override(value, call_key=call.call_key, execution_id=execution_id)
    elif adapter_owned and call.kind in TOOL_KINDS:
        format_, payload = tool_result_override(value, call_key=call.call_key)
    elif adapter_owned:
        shown = f"format {stored_format!r}" if stored_format else f"a {call.kind} call's format"
        raise ConfigurationError(
            f"Cannot override call {call.call_key!r} of execution {execution_id!r}: its output is stored in "
            f"{shown}, which belongs to its framework adapter, and only model requests and tool calls of an "
            f"adapter can be overridden. Replay from this call (from_call={call.call_key!r}) so it runs live."
        )
    else:
        value = _as_stored_type(store, call, value)
        try:
            format_, payload = JsonCodec().encode(value)
        except SerializationError as error:
            raise SerializationError(
                f"Override for call {call.call_key!r} cannot be stored: {error}"
            ) from error
    return dataclasses.replace(
        call,
        status="completed",
        output=store.prepare_value(format_, payload),
        fingerprint=None,
        error_type=None,
        error_message=None,
        error_traceback=None,
        details={**call.details, "overridden": True},
        # an overridden model response asked no model: zero usage, not the original's
        **({"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0} if call.kind == MODEL_KIND else {}),
    )


def _as_stored_type(store: Store, call: CallRecord, value: Any) -> Any:
    """Validate a plain override into the class of the stored output (pydantic model, dataclass)."""
    if call.output is None or call.output.format != TYPED_FORMAT or not isinstance(value, dict | list):
        return value
    try:
        original = JsonCodec().decode(call.output.format, store.load_value(call.output))
    except SerializationError:  # its class is not imported here: stored as given
        return value
    if not (isinstance(original, _pydantic_base()) or dataclasses.is_dataclass(original)):
        return value
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(type(original)).validate_python(value)
    except ValidationError as error:
        raise ConfigurationError(
            f"Override for call {call.call_key!r} is not a valid {type(original).__qualname__} (the type of "
            f"its stored output): {error}"
        ) from error


def _pydantic_base() -> type:
    from pydantic import BaseModel

    return BaseModel


def _override_wait(execution_id: str, wait: WaitRecord, value: Any) -> WaitRecord:
    """A copy of `wait` answered with `value`, checked against its schema."""
    from jsonschema import Draft202012Validator, validators

    from kitaru_core.errors import InvalidAnswerError

    validator_class = validators.validator_for(wait.schema, default=Draft202012Validator)
    problems = sorted(
        f"{'/'.join(str(part) for part in error.absolute_path) or 'value'}: {error.message}"
        for error in validator_class(wait.schema).iter_errors(value)
    )
    outcome = "no replay was created (change the answer and replay again)"
    if problems:
        raise InvalidAnswerError(execution_id, wait.name, problems, outcome=outcome)
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise InvalidAnswerError(
            execution_id, wait.name, [f"value is not JSON: {error}"], outcome=outcome
        ) from error
    return dataclasses.replace(
        wait,
        status="answered",
        answer=value,
        has_answer=True,
        answered_at_epoch_s=time.time(),
        answered_by="replay override",
        details={**wait.details, "overridden": True},
    )


def _stored_inputs(record: ExecutionRecord) -> StoredValue | None:
    if record.inputs_format is None or record.inputs is None:
        return None
    return StoredValue(record.inputs_format, record.inputs, None, len(record.inputs))


def _override_inputs(
    store: Store,
    source: ExecutionRecord,
    inputs: Mapping[str, Any],
    parameters: Sequence[str] | None,
    decode_inputs: Any,
) -> StoredValue:
    from kitaru_core._boundary import decode_stored

    stored = decode_stored(store, _stored_inputs(source), JsonCodec())
    current: dict[str, Any] = dict(stored) if isinstance(stored, dict) else {}  # pyright: ignore[reportUnknownArgumentType]
    known = list(parameters) if parameters is not None else list(current)
    unknown = [name for name in inputs if name not in known]
    if unknown:
        raise ConfigurationError(
            f"Flow {source.flow_name!r} has no input {', '.join(repr(name) for name in unknown)}; "
            f"its inputs: {', '.join(repr(name) for name in known) or 'none'}."
        )
    given = dict(inputs)
    if decode_inputs is not None:
        from pydantic import ValidationError

        try:
            given = decode_inputs(given)
        except ValidationError as error:
            raise ConfigurationError(f"Invalid inputs for flow {source.flow_name!r}: {error}") from error
    try:
        format_, payload = JsonCodec().encode({**current, **given})
    except SerializationError as error:
        raise SerializationError(f"Inputs of the replay cannot be stored: {error}") from error
    return StoredValue(format_, payload, None, len(payload))
