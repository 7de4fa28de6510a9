"""What the tests share, one module per concern; conftest.py files hold only fixtures.

environment (ROOT, CI, required tools), network (ports), servers (in-process), processes
(server processes), postgres (throw-away databases, replicas), proxy (a TCP proxy that
fails on cue), requests (a valid RequestPayment), repositories (stores, faulty ones),
otlp_receiver, certificates, clients, h2_attacker (raw HTTP/2), server_process (the attack
tests' server), chart, containers (podman), compose, dockerfile, kind_prometheus.
"""
