"""One of a table1 run's local worker processes (``--set workers=N``): the launcher
(:func:`benchmarks.vision.runs.run_table1_workers`) starts N of them as torchrun would, each
reads the run's resolved config from the file it is given and runs its rank's share
(``distributed=slice``: stages and runs dealt to ranks); rank 0 writes the reports.

    python -m benchmarks.vision.worker OUT/.workers/config.json    # under the launcher only
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.vision.config import config_from_dict
from benchmarks.vision.experiment import TABLE1
from subind.runtime import dist_env


def main(argv: list[str]) -> int:
    saved = json.loads(Path(argv[0]).read_text())
    cfg = config_from_dict(saved["config"])
    rank = dist_env()[0]
    try:
        TABLE1.run(cfg, Path(saved["out"]), saved["preset"], saved["progress"] and rank == 0)
    except TABLE1.errors as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
