"""The GPU check of the embedder (issue 20): prepare here, stage and run on the GPU machine.

    prepare (here):  python scripts/gpu_check.py prepare            -> .gpu_carry/part-NN/
    stage (device):  python scripts/gpu_check.py stage              (one part per call)
    run (device):    python scripts/gpu_check.py run [OUT]          -> OUT/gpu_check.{json,txt,log}
    dry run (here):  python scripts/gpu_check.py run --dry-run OUT  (CPU stands in, tiny sizes)

scripts/gpu_check.sh is the entry point; docs/benchmarks.md ("GPU check") gives the call sequence.
The check itself is ris.tools.gpu_check.
"""

from __future__ import annotations

import sys

from ris.tools.gpu_check.check import main

if __name__ == "__main__":
    sys.exit(main())
