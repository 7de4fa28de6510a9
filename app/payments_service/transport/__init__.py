"""The gRPC layer: servicer, proto <-> domain conversion, error mapping, interceptors."""
