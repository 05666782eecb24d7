"""The gRPC front end (turnout.v1.Generation), served by grpc.aio in the HTTP server's event loop."""
