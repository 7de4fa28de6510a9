"""The domain: plain Python, no gRPC, database or telemetry imports."""
