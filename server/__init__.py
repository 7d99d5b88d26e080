"""netscope server: gRPC service, model registry and the domain code behind each RPC."""
