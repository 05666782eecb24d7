"""Generated protobuf and gRPC stubs (python -m server.grpc.codegen); do not edit."""
