"""The OpenAI request bodies v4c serves, as pydantic models: what the `openai` client sends.

Why pydantic: a request is checked whole before it reaches the scheduler, and a bad field
becomes OpenAI's 400 error naming it (`errors.py`). Fields OpenAI defines and v4c does not
use (`user`, `metadata`, ...) are accepted and ignored, as OpenAI-compatible servers do;
a field v4c would have to honour and cannot (an image) is refused.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

MAX_N = 16  # choices a request may ask for
MAX_STOPS = 8


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Function(BaseModel):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
    description: str | None = None
    parameters: dict | None = None
    strict: StrictBool | None = None


class Tool(BaseModel):
    type: Literal["function"]
    function: Function


class ToolCallFunction(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: ToolCallFunction


# V4's own message keys, passed to the encoder as they are (it checks them): a quick-
# instruction `task`, and `wo_eos` for an assistant prefix the model goes on from
V4_KEYS = ("task", "wo_eos")


class Message(_Body):
    role: Literal["system", "user", "assistant", "tool", "developer", "latest_reminder"]
    content: str | list[TextPart] | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def as_dict(self) -> dict:
        """The message as `encode_chat` reads it (text parts joined, V4's own keys kept)."""
        extra = self.model_extra or {}
        out = self.model_dump(exclude_none=True, exclude=set(extra))
        out.update({key: extra[key] for key in V4_KEYS if key in extra})
        if isinstance(self.content, list):
            out["content"] = "\n\n".join(part.text for part in self.content)
        return out


class NamedToolChoice(BaseModel):
    class _Name(BaseModel):
        name: str

    type: Literal["function"]
    function: _Name


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class _Sampling(_Body):
    """What chat and completions share."""

    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    top_k: Annotated[int, Field(ge=-1)] = 0  # vLLM's extension; -1 and 0: no filter
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    seed: Annotated[int, Field(ge=0, le=2**63 - 1 - MAX_N)] | None = None
    stop: str | list[str] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    repetition_penalty: Annotated[float, Field(gt=0.0)] = 1.0  # vLLM's extension; 1: off

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings, got {len(stops)}")
        return stops

    @property
    def stops(self) -> tuple[str, ...]:
        return tuple(self.stop or ())


class ChatRequest(_Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: StrictBool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool = True
    reasoning_effort: Literal["minimal", "low", "medium", "high", "max"] | None = None
    chat_template_kwargs: dict | None = None

    @model_validator(mode="after")
    def _choices(self):
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        named = isinstance(self.tool_choice, NamedToolChoice)
        if (named or self.tool_choice == "required") and not self.tools:
            raise ValueError("tool_choice names a tool, but the request has no tools")
        if named and self.tool_choice.function.name not in {t.function.name for t in self.tools}:
            raise ValueError(f"tool_choice: no tool named {self.tool_choice.function.name!r}")
        return self

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


Prompt = str | Annotated[list[str], Field(min_length=1)] | list[int] | list[list[int]]


class CompletionRequest(_Sampling):
    prompt: Prompt
    max_tokens: Annotated[int, Field(ge=1)] | None = 16
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: Literal[False] = False
    suffix: None = None

    @property
    def limit(self) -> int | None:
        return self.max_tokens
