"""Request bodies of Neuronpedia's NLA server (apps/nla in hijohnnylin/neuronpedia), as its clients send them.

Field names, defaults and bounds follow its openapi.json; unknown fields are ignored, as that server does (our /v1
bodies in serve/api.py refuse them). Server limits that come from our config (max_new_tokens, positions, vectors)
are checked by the routes at run time, not declared here. Response shapes are plain dicts built by the routes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessage(Body):
    role: str = Field(description="chat role, e.g. user / assistant / system")
    content: str = Field("", description="message text")
    channel: str | None = Field(None, description="harmony channel of an assistant turn (passed to the template)")


class ChatInput(Body):
    """`text`, or chat `messages` rendered by the base model's own chat template (then spans come back per token)."""

    text: str | None = Field(None, description="input text (or give messages)")
    messages: list[ChatMessage] | None = Field(None, description="chat messages; when set, text is ignored")
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    enable_thinking: bool | None = None

    def template_options(self) -> dict[str, Any]:
        return {"add_generation_prompt": self.add_generation_prompt,
                "continue_final_message": self.continue_final_message, "enable_thinking": self.enable_thinking}

    def message_dicts(self) -> list[dict[str, Any]] | None:
        return [m.model_dump(exclude_none=True) for m in self.messages] if self.messages else None


class Generating(Body):
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="0 = greedy; their default 0.7")
    max_new_tokens: int = Field(200, gt=0, description="AV tokens per description (capped by limits.max_new_tokens)")


class ExplainRequest(ChatInput, Generating):
    positions: list[int] | None = Field(None, description="token positions to describe, negative = from the end; "
                                                          "omitted or [] = every readable position")
    reverse: bool = Field(True, description="describe positions last to first")
    stream: bool = Field(False, description="answer Server-Sent Events")


class DescribeRequest(Generating):
    activations: list[list[float]] = Field(min_length=1, description="vectors of d_model floats each")
    stream: bool = Field(False, description="answer Server-Sent Events")


class ScoreRequest(Body):
    description: str = Field(description="the text to score against the activation")
    activation: list[float] = Field(description="the original activation vector")


class CompareRequest(Generating):
    activation_a: list[float]
    activation_b: list[float]


class ExtractRequest(ChatInput):
    pass


class TokenizeRequest(ChatInput):
    pass


class CompletionRequest(ChatInput):
    completion_tokens: int = Field(16, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=5.0)
    stream: bool = False
