"""What ``oir-edit`` accepts from a ComfyUI server: one pydantic model per answer it reads.

Every body the client uses goes through :func:`parse` (``/system_stats``, ``/object_info/<class>``,
``/upload/image``, ``/prompt``, ``/history/<id>``), :func:`event` and :func:`event_data` (``/ws``
messages) or :func:`picture` (``/view``) before anything reads it. Anything else raises
:class:`AnswerInvalid` with a few words saying what was wrong; the client adds the server and the
endpoint (:class:`oir_cli.client.BadAnswer`, exit 1). The models keep fields they do not name
(``extra="allow"``): ComfyUI versions add fields, and only what ``oir-edit`` reads is checked.
"""

from __future__ import annotations

import io
import json
from typing import Annotated, Any

from PIL import Image
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

__all__ = [
    "AnswerInvalid",
    "Event",
    "History",
    "NodeInfo",
    "ObjectInfo",
    "PackInfo",
    "QueueState",
    "Queued",
    "Refusal",
    "SystemStats",
    "Upload",
    "event",
    "event_data",
    "parse",
    "picture",
]


class AnswerInvalid(ValueError):
    """A server answer that is not what ComfyUI sends (the message says what was wrong, one line)."""


class Answer(BaseModel):
    """A part of a ComfyUI answer: the named fields are checked, others are kept as they came."""

    model_config = ConfigDict(extra="allow")


# /system_stats ------------------------------------------------------------------------------------


class SystemInfo(Answer):
    comfyui_version: str = "unknown"
    python_version: str | None = None
    pytorch_version: str | None = None


class Device(Answer):
    name: str | None = None
    type: str | None = None


class SystemStats(Answer):
    """``GET /system_stats``: versions (recorded in ``report.json``) and devices."""

    system: SystemInfo
    devices: list[Device] = Field(default_factory=list)


# /object_info/<class> -----------------------------------------------------------------------------


def _checked_input_spec(spec: list[Any]) -> list[Any]:
    """An input spec as ``check_workflow`` reads it: ``[type or options]`` or ``[..., {options}]``."""
    if not spec:
        raise ValueError("an input spec is an empty list")
    if not isinstance(spec[0], (str, list)):
        raise ValueError(f"an input's type {spec[0]!r} is neither a name nor a list of choices")
    if len(spec) > 1:
        options = spec[1]
        if not isinstance(options, dict):
            raise ValueError(f"an input's options {options!r} are not a mapping")
        for limit in ("min", "max"):
            bound = options.get(limit)
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))):
                raise ValueError(f"the input's '{limit}' {bound!r} is not a number")
        if spec[0] == "COMBO" and not isinstance(options.get("options", []), list):
            raise ValueError("a COMBO input's 'options' are not a list")
    return spec


InputSpec = Annotated[list[Any], AfterValidator(_checked_input_spec)]


class NodeInputs(Answer):
    required: dict[str, InputSpec] = Field(default_factory=dict)
    optional: dict[str, InputSpec] = Field(default_factory=dict)


class NodeInfo(Answer):
    """One node class of ``/object_info``: its inputs with their choices and limits."""

    input: NodeInputs = Field(default_factory=NodeInputs)


ObjectInfo = dict[str, NodeInfo]
"""``GET /object_info/<class>``: ``{class: info}``, or ``{}`` when the server has no such node."""


# /upload/image ------------------------------------------------------------------------------------


class Upload(Answer):
    """``POST /upload/image``: where the server stored the file."""

    name: str = Field(min_length=1)
    subfolder: str = ""
    type: str = "input"


# /prompt ------------------------------------------------------------------------------------------


def _empty_list_as_mapping(value: Any) -> Any:
    return {} if value == [] else value  # older ComfyUI answers "node_errors": [] when there are none


class ErrorItem(Answer):
    message: str = ""
    details: str = ""


class NodeErrors(Answer):
    errors: list[ErrorItem] = Field(default_factory=list)
    class_type: str = "?"


NodeErrorMap = Annotated[dict[str, NodeErrors], BeforeValidator(_empty_list_as_mapping)]


class PromptError(Answer):
    type: str = ""
    message: str = ""
    details: str = ""


class Queued(Answer):
    """``POST /prompt`` answered 200: the prompt id, and the nodes refused in a partial prompt."""

    prompt_id: str = Field(min_length=1)
    node_errors: NodeErrorMap = Field(default_factory=dict)


class Refusal(Answer):
    """``POST /prompt`` answered 400: ComfyUI's validation refused the prompt (nothing was queued)."""

    error: PromptError | str | None = None
    node_errors: NodeErrorMap = Field(default_factory=dict)


# /history/<id> ------------------------------------------------------------------------------------


class ImageRef(Answer):
    """An image a node saved, as ``/view`` takes it."""

    filename: str = Field(min_length=1)
    subfolder: str = ""
    type: str = "output"


class PairScore(Answer):
    """One pair's entry of OIR Mask Metric Scorer's ``oir_scores`` (``nodes/scoring_nodes.py``)."""

    pair: int = Field(ge=0)
    source: str
    target: str
    chosen: int = Field(ge=0)
    searched: int = Field(ge=0)
    override: int | None = None
    table: dict[str, Any] = Field(default_factory=dict)


class RegionScore(Answer):
    """One pair's entry of OIR Edit Region Score's ``oir_region_scores`` (``nodes/scoring_nodes.py``)."""

    pair: int = Field(ge=0)
    source: str
    target: str
    clip_score: float


class ReassembledPair(Answer):
    step: int
    source: str


class ReassemblyReport(Answer):
    """OIR Object Reassembly's ``oir_reassembly`` (``nodes/sampling_nodes.py``)."""

    reassembly_step: int
    reinversion_steps: int | None = None  # reported since the levels fix; older packs omit it
    pairs: list[ReassembledPair] = Field(default_factory=list)


class NodeOutputs(Answer):
    """A node's UI outputs in the history (the keys ``oir-edit`` reads)."""

    images: list[ImageRef] = Field(default_factory=list)
    oir_scores: list[PairScore] = Field(default_factory=list)
    oir_stats: list[dict[str, Any]] = Field(default_factory=list)
    oir_grid: list[Any] = Field(default_factory=list)
    oir_reassembly: list[ReassemblyReport] = Field(default_factory=list)
    oir_region_scores: list[RegionScore] = Field(default_factory=list)


class HistoryStatus(Answer):
    status_str: str
    completed: bool = False
    messages: list[tuple[str, dict[str, Any]]] = Field(default_factory=list)


class HistoryEntry(Answer):
    """A finished prompt: its status (with the error, if any) and every node's outputs."""

    prompt: list[Any] = Field(default_factory=list)
    outputs: dict[str, NodeOutputs] = Field(default_factory=dict)
    status: HistoryStatus | None = None


History = dict[str, HistoryEntry]
"""``GET /history/<id>``: ``{id: entry}`` once the prompt finished, ``{}`` before."""


# /queue and /oir/pack -----------------------------------------------------------------------------


class QueueState(Answer):
    """``GET /queue``: the running and pending items, each ``[number, prompt_id, prompt, extra, outputs]``."""

    queue_running: list[list[Any]] = Field(default_factory=list)
    queue_pending: list[list[Any]] = Field(default_factory=list)

    def prompt_ids(self, which: str) -> list[str]:
        """The prompt ids of ``"queue_running"`` or ``"queue_pending"`` (items too short are skipped)."""
        return [str(item[1]) for item in getattr(self, which) if len(item) > 1]


class PackInfo(Answer):
    """``GET /oir/pack`` (``nodes/pack_info.py``): the pack's release and a hash of its code."""

    name: str
    version: str
    code: str


# /ws ----------------------------------------------------------------------------------------------


class Event(Answer):
    """One websocket text message: ``{"type": ..., "data": ...}`` (ComfyUI's ``send_json``)."""

    type: str
    data: Any = None


class ForPrompt(Answer):
    prompt_id: str | None = None


class Executing(ForPrompt):
    node: str | None = None


class Cached(ForPrompt):
    nodes: list[str] = Field(default_factory=list)


class StepProgress(ForPrompt):
    value: float
    max: float


class StageProgress(ForPrompt):
    """``oir_progress`` (``nodes/progress.py``): rows done of the stage's total, level, ETA."""

    stage: str = ""
    level: int = Field(ge=0)
    levels_total: int = Field(ge=0)
    rows_done: int = Field(ge=0)
    rows_total: int = Field(ge=0)
    eta_s: float | None = None


EVENT_DATA: dict[str, type[ForPrompt]] = {
    "execution_start": ForPrompt,
    "execution_cached": Cached,
    "executing": Executing,
    "progress": StepProgress,
    "executed": ForPrompt,
    "execution_success": ForPrompt,
    "execution_error": ForPrompt,
    "execution_interrupted": ForPrompt,
    "oir_progress": StageProgress,
}
"""The events about a prompt that ``oir-edit`` reads, and what their ``data`` must hold; other
types (queue status, other packs' events) pass unchecked."""


# parsing ------------------------------------------------------------------------------------------


def _describe(error: ValidationError) -> str:
    """The first problem of a validation error, in a few words: where, what, the value."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "the answer"
    value = repr(first.get("input"))
    value = value if len(value) <= 60 else value[:57] + "..."
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message} (got {value})"


def _json(body: bytes, what: str = "the body") -> Any:
    try:
        return json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        start = body[:40].decode("utf-8", "replace")
        raise AnswerInvalid(f"{what} is not JSON (it starts {start!r})") from None


def parse(model: Any, body: bytes) -> Any:
    """``body`` (an HTTP answer) as ``model`` (a model class or a ``dict[str, Model]`` type).

    Raises:
        AnswerInvalid: the body is not JSON or not of the model's shape.
    """
    data = _json(body)
    try:
        return TypeAdapter(model).validate_python(data)
    except ValidationError as error:
        raise AnswerInvalid(_describe(error)) from None


def event(text: bytes) -> Event:
    """A websocket text message as an :class:`Event` (``AnswerInvalid`` otherwise)."""
    data = _json(text, "a message")
    try:
        return Event.model_validate(data)
    except ValidationError as error:
        raise AnswerInvalid(f"a message is not an event: {_describe(error)}") from None


def event_data(message: Event) -> dict[str, Any] | None:
    """The checked ``data`` of an event about a prompt (:data:`EVENT_DATA`), as a mapping;
    ``None`` for the types ``oir-edit`` does not read."""
    model = EVENT_DATA.get(message.type)
    if model is None:
        return None
    try:
        return model.model_validate(message.data).model_dump()
    except ValidationError as error:
        raise AnswerInvalid(f"a {message.type!r} event: {_describe(error)}") from None


def picture(body: bytes) -> bytes:
    """``body`` unchanged if it is an image Pillow can read (``AnswerInvalid`` otherwise)."""
    try:
        with Image.open(io.BytesIO(body)) as opened:
            opened.verify()
    except Exception as error:  # Pillow raises many types for broken files
        start = body[:20]
        raise AnswerInvalid(f"not an image ({type(error).__name__}; it starts {start!r})") from None
    return body
