"""Using an exported SavedModel: load it and predict from raw text, or call TF Serving.

`RestClient` (standard library only) and `GrpcClient` (tensorflow-serving-api stubs, loaded
on first use) call a model served by TF Serving and answer alike: output name → numpy array,
strings as ``str``; failures raise `ServingError`. Importing this package imports neither
TensorFlow nor grpc.
"""

from kmtl.serving.errors import ServingError
from kmtl.serving.grpc_client import GrpcClient
from kmtl.serving.rest import RestClient

__all__ = ["GrpcClient", "RestClient", "ServingError"]
