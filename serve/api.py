"""The HTTP API's request bodies (pydantic): field docs for /docs, unknown fields refused, shapes checked.

Server limits (batch size, max_new_tokens, ...) come from the config at run time, so they are checked by the ingress,
not declared here. Vectors are `list[float]` or a base64 string of little-endian float32 (serve/codec.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from nla.av import MIN_TEMPERATURE
from nla.lake.browse import LabelFilter
from nla.settings import SamplingSettings

Vector = list[float] | str
DEFAULT = SamplingSettings()
VECTOR_DOC = "a list of d floats, or base64 of d little-endian float32 values"


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sampling(Request):
    """A request's sampling: the defaults are nla.settings.SamplingSettings' (those of `nla label`)."""
    temperature: float = Field(DEFAULT.temperature, ge=0.0, le=10.0, description="0 = greedy (default); 1.0 = the "
                               f"release's sampling; else at least {MIN_TEMPERATURE}")
    top_p: float = Field(DEFAULT.top_p, gt=0.0, le=1.0)
    max_new_tokens: int = Field(DEFAULT.max_new_tokens, ge=1, description="AV tokens per explanation (capped by the "
                                "server's limit)")
    seed: int | None = Field(None, ge=0, lt=2**63, description="seeds sampling; a seeded request is never batched "
                             "with others")

    @model_validator(mode="after")
    def sampling_temperature(self) -> Sampling:
        if 0 < self.temperature < MIN_TEMPERATURE:
            raise ValueError(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE}: smaller ones overflow "
                             "the logits")
        return self


class ExtractRequest(Request):
    text: str = Field(description="a document (UTF-8); cut to the server's max_tokens")
    positions: list[int] | None = Field(None, description="token positions to return vectors for; [] = tokens only")
    sample: int | None = Field(None, ge=1, description="instead of positions: sample this many eligible positions")
    min_position: int = Field(0, ge=0, description="with sample: first eligible position")
    seed: int = Field(0, ge=0, lt=2**63, description="with sample: position RNG seed (with the text's hash)")
    encoding: Literal["list", "base64"] = "list"

    @model_validator(mode="after")
    def one_source(self) -> ExtractRequest:
        if self.positions is not None and self.sample is not None:
            raise ValueError("give positions or sample, not both")
        return self


class ExplainRequest(Sampling):
    vectors: list[Vector] | str | None = Field(None, description=f"activations to explain: each {VECTOR_DOC}, or one "
                                                                  "base64 string of N*d floats")
    text: str | None = Field(None, description="instead of vectors: a document whose activations are extracted")
    positions: list[int] | None = Field(None, description="with text: token positions to explain")
    samples: int = Field(DEFAULT.samples, ge=1, description="explanations per vector")
    return_vectors: bool = Field(False, description="echo each explained vector (handy with text + positions)")
    encoding: Literal["list", "base64"] = "list"

    @model_validator(mode="after")
    def one_source(self) -> ExplainRequest:
        if (self.vectors is None) == (self.text is None):
            raise ValueError("give exactly one of vectors or text (+ positions)")
        if self.text is not None and not self.positions:
            raise ValueError("text needs positions, e.g. [3, 5] (POST /v1/extract with positions [] lists the tokens)")
        if self.vectors is not None and self.positions is not None:
            raise ValueError("positions go with text, not with vectors")
        return self


class ReconstructRequest(Request):
    explanations: list[str] = Field(min_length=1, description="explanation texts")
    encoding: Literal["list", "base64"] = "list"


class ScoreRequest(Request):
    explanations: list[str] = Field(min_length=1, description="explanation texts, paired 1:1 with vectors")
    vectors: list[Vector] | str = Field(description=f"the original activations: each {VECTOR_DOC}")


class Source(Request):
    vector: Vector | None = Field(None, description=VECTOR_DOC)
    text: str | None = Field(None, description="instead of vector: a document ...")
    position: int | None = Field(None, ge=0, description="... and the token position to read")

    @model_validator(mode="after")
    def one_source(self) -> Source:
        if (self.vector is None) == (self.text is None) or (self.text is not None) != (self.position is not None):
            raise ValueError("give either vector, or text and position")
        return self


class CompareRequest(Sampling):
    a: Source
    b: Source


class SearchRequest(Request):
    text: str | None = Field(None, description="by meaning: the AR turns this explanation-like text into a vector")
    vector: Vector | None = Field(None, description=f"by vector: {VECTOR_DOC}")
    keyword: str | None = Field(None, description="by keyword: a case-insensitive regex over explanations")
    k: int = Field(10, ge=1, description="results (capped by the server's max_k)")
    exact: bool = Field(False, description="scan every vector instead of using the index; the answer's `method` "
                                           "says which was used (index | index+scan | exact)")

    @model_validator(mode="after")
    def one_source(self) -> SearchRequest:
        if sum(x is not None for x in (self.text, self.vector, self.keyword)) != 1:
            raise ValueError("give exactly one of text, vector or keyword")
        return self


class QueryRequest(Request):
    sql: str = Field(description="one read-only SELECT over the lake's views (activations, explanations, labels, "
                                 "features, runs, ...)")
    limit: int = Field(100, ge=1, description="rows returned (capped by the server's query_max_rows)")


# ---- the explorer (serve/explorer.py) ----------------------------------------------------------------------------
@pydantic_dataclass(config=ConfigDict(extra="forbid"), frozen=True)
class LabelsRequest(LabelFilter):
    """nla.lake.browse.LabelFilter as a request body: the filter, sort and page of labels to show."""


class DocumentRequest(Request):
    act_id: str = Field(description="an activation id (activations.act_id): its document's labeled positions")


class LakeCompareRequest(Request):
    a: str = Field(description="a recipe hash (or its first 4+ characters) or a run id")
    b: str = Field(description="another recipe, the same way")
    top: int = Field(20, ge=1, le=200, description="rows that changed most")


class StripRequest(Sampling):
    text: str = Field(description="a document: every readable token is explained and scored in one batch (up to the "
                                  "server's max_vectors tokens)")
