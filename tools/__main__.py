"""``python -m tools ...``: see tools/cli.py."""

import os
import sys

# Before torch loads OpenMP: idle worker threads sleep instead of spinning. On a 2-core machine
# shared with other jobs, spinning threads made training steps 3x slower; alone it costs nothing.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from tools.quiet import quiet_import_warnings  # noqa: E402

quiet_import_warnings()

from tools.cli import main  # noqa: E402

sys.exit(main())
