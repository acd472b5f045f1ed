"""seda-dynamo: Amazon's Dynamo (SOSP 2007) as a multiprocess SEDA pipeline over ZeroMQ."""

from seda_dynamo.client import (
    BadRequest,
    Client,
    DynamoError,
    GetResult,
    InternalError,
    NoReply,
    Overloaded,
    RequestTimeout,
    TooLarge,
    Unavailable,
)

__all__ = ["BadRequest", "Client", "DynamoError", "GetResult", "InternalError", "NoReply",
           "Overloaded", "RequestTimeout", "TooLarge", "Unavailable"]
__version__ = "0.1.0"
