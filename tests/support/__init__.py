"""Helpers for the attack tests: a raw HTTP/2 client and the server as a process."""
