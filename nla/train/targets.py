"""SFT targets for mined examples: best-of-k AV samples ranked by the AR, or a teacher LLM over HTTP.

Best-of-k needs no teacher: sample k explanations per activation, keep the one the AR reconstructs best (and only
if it beats the explanation the example was mined with). The teacher path asks any OpenAI-compatible chat endpoint
(`--teacher-url`, `--teacher-model`; a local server works, e.g. `nla toy teacher`) to explain the TEXT PREFIX
ending at the activation's token, in the release's form.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nla.errors import NLAInputError

TEACHER_PROMPT = (
    "Below is a text prefix. Describe what a language model is most likely representing at its LAST token. Give 2-3 "
    "features, most important first, each as a short sentence in its own paragraph; the last feature is about the "
    "very end of the text. About 80-100 words in all, no preamble.\n\n<text>{prefix}</text>")


@dataclass
class TeacherSettings:
    url: str = "http://127.0.0.1:8000/v1"  # base URL of an OpenAI-compatible API (…/v1)
    model: str = "nla-toy-teacher"  # model name the endpoint serves
    api_key_env: str = "NLA_TEACHER_API_KEY"  # env var holding a bearer token, if the endpoint needs one
    max_tokens: int = 200
    temperature: float = 0.0
    timeout_s: float = 60.0
    max_prefix_chars: int = 2000  # the prefix's last characters sent (long documents are cut from the left)


class Teacher:
    """Explains text prefixes through /chat/completions. Errors name the endpoint and the fix."""

    def __init__(self, settings: TeacherSettings) -> None:
        import os

        self.s = settings
        self.key = os.environ.get(settings.api_key_env, "")

    def explain(self, prefix: str) -> str:
        body = {"model": self.s.model, "max_tokens": self.s.max_tokens, "temperature": self.s.temperature,
                "messages": [{"role": "user",
                              "content": TEACHER_PROMPT.format(prefix=prefix[-self.s.max_prefix_chars:])}]}
        req = urllib.request.Request(self.s.url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.key}"} if self.key else {})})
        try:
            with urllib.request.urlopen(req, timeout=self.s.timeout_s) as r:
                answer = json.loads(r.read())["choices"][0]["message"]["content"]
        except urllib.error.HTTPError as e:
            raise NLAInputError(f"teacher {self.s.url} answered {e.code}: {e.read()[:200]!r}. Fix: check "
                                f"--teacher-model ({self.s.model!r}) and the key in ${self.s.api_key_env}.") from e
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise NLAInputError(f"teacher {self.s.url} unreachable ({e}). Fix: start the endpoint (e.g. `nla toy "
                                "teacher --port 8000`, or a vLLM/OpenAI server) and pass its URL.") from e
        except (KeyError, IndexError, ValueError) as e:
            raise NLAInputError(f"teacher {self.s.url}: not an OpenAI chat completion response. Fix: point "
                                "--teacher-url at the API's /v1 base.") from e
        return answer.strip()


@torch.no_grad()
def best_of_k(client: Any, critic: Any, vectors: torch.Tensor, k: int, *, temperature: float = 1.0,
              max_new_tokens: int = 200, seed: int = 0) -> tuple[list[str | None], np.ndarray]:
    """Per vector: the best of k sampled explanations by AR mse (None where no sample parsed), and its mse."""
    best: list[str | None] = [None] * len(vectors)
    best_mse = np.full(len(vectors), np.inf, np.float32)
    for s in range(k):
        gens = client.explain(vectors, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed + s)
        ok = [i for i, g in enumerate(gens) if g.status == "ok"]
        if not ok:
            continue
        mse, _ = critic.score_batch([gens[i].explanation for i in ok], vectors[ok])
        for j, i in enumerate(ok):
            if float(mse[j]) < best_mse[i]:
                best[i], best_mse[i] = gens[i].explanation, float(mse[j])
    return best, best_mse
