"""nla: Natural Language Autoencoders as a library. `from nla import NLAClient, NLACritic`.

Model-side logic only (sidecars, injection, extraction, AV, AR, scores, training loops, the toy kit, the CLI);
Ray lives in jobs/ and serve/, never here.
"""

from nla.errors import NLACheckpointError, NLAConfigError, NLAError, NLAInputError
from nla.meta import NLAMeta, TokenMeta

__all__ = ["NLAClient", "NLACritic", "NLAMeta", "TokenMeta", "NLAError", "NLAConfigError", "NLACheckpointError",
           "NLAInputError"]


def __getattr__(name: str):  # heavy imports (torch, transformers) only when the API is used
    if name in ("NLAClient", "NLACritic"):
        from nla import client

        return getattr(client, name)
    raise AttributeError(name)
