"""Calls the server with Python's grpcio (Debian's python3-grpcio, the C core), a client nobody
here wrote. Generates the message classes with protoc into a temporary folder (inference.proto
from PROTO_DIR, the standard health.proto from beside this script), then makes plain calls through grpc.Channel.unary_unary / unary_stream.

Usage: grpcio_client.py HOST:PORT PROTO_DIR OUT_DIR
Prints one JSON object with what came back.
"""
import json
import os
import subprocess
import sys

import grpc


def main():
    target, proto_dir, out_dir = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run(["protoc", f"--proto_path={proto_dir}", f"--proto_path={here}", f"--python_out={out_dir}", "inference.proto", "health.proto"],
                   check=True)
    sys.path.insert(0, out_dir)
    import inference_pb2  # noqa: E402 (generated above)
    import health_pb2  # noqa: E402

    channel = grpc.insecure_channel(target)
    generate = channel.unary_unary("/inference.v1.Inference/Generate",
                                   request_serializer=inference_pb2.GenerateRequest.SerializeToString,
                                   response_deserializer=inference_pb2.GenerateResponse.FromString)
    stream = channel.unary_stream("/inference.v1.Inference/GenerateStream",
                                  request_serializer=inference_pb2.GenerateRequest.SerializeToString,
                                  response_deserializer=inference_pb2.GenerateResponse.FromString)
    check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                response_deserializer=health_pb2.HealthCheckResponse.FromString)

    request = inference_pb2.GenerateRequest(prompt="def f(x):", max_tokens=6, temperature=0)
    unary = generate(request, timeout=60)
    deltas = list(stream(request, timeout=60))
    health = check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    try:
        generate(inference_pb2.GenerateRequest(prompt="", max_tokens=3), timeout=10)
        error = None
    except grpc.RpcError as e:
        error = {"code": e.code().name, "details": e.details()}

    print(json.dumps({
        "unary": {"text": unary.text, "token_ids": list(unary.token_ids),
                  "finish_reason": inference_pb2.FinishReason.Name(unary.finish_reason),
                  "completion_tokens": unary.usage.completion_tokens},
        "stream": {"token_ids": [t for d in deltas for t in d.token_ids], "text": "".join(d.text for d in deltas),
                   "finish_reason": inference_pb2.FinishReason.Name(deltas[-1].finish_reason), "messages": len(deltas)},
        "health": health_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
        "error": error,
    }))


if __name__ == "__main__":
    main()
