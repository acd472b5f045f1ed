"""seda-dynamo: Amazon's Dynamo (SOSP 2007) as a multiprocess SEDA pipeline over ZeroMQ.

``from seda_dynamo import Client`` works as before, but the client (and with it pyzmq and
asyncio) is loaded only when one of its names is asked for (PEP 562): importing a pure
core such as ``seda_dynamo.ring`` loads no network library (docs/architecture.md,
"Which way imports point"; tests/cores/test_imports.py).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BadRequest", "Client", "DynamoError", "GetResult", "InternalError", "NoReply",
           "Overloaded", "RequestTimeout", "TooLarge", "Unavailable"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("seda_dynamo.client"), name)
    raise AttributeError(f"module 'seda_dynamo' has no attribute {name!r}")
