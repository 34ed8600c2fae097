"""The PC/SC tests run through a real pcscd with the vpcd driver, started by the
unioncard pytest plugin (one private pcscd per test process)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "terminal"))
