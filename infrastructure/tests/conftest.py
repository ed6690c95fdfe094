"""Puts the project root on sys.path: the stack imports `chalicelib` and `infrastructure` as packages."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs the CDK CLI end to end (about 20 s); -m \"not slow\" skips it")
