"""The committed generated code is exactly what proto/payments.proto produces."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.environment import ROOT

GENERATED = [
    "payments_pb2.py",
    "payments_pb2.pyi",
    "payments_pb2_grpc.py",
    "payments_pb2_grpc.pyi",
]


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    # The same command as `make proto`, into a scratch directory.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Ipayments_service=proto",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--mypy_out={tmp_path}",
            f"--mypy_grpc_out={tmp_path}",
            "payments_service/payments.proto",
        ],
        check=True,
        cwd=ROOT,
        env=env,
        capture_output=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "payments_service" / name).read_text()
        committed = (ROOT / "app" / "payments_service" / name).read_text()
        assert committed == fresh, f"{name} is stale: run `make proto` and commit the result"
