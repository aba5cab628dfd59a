"""``python -m otel_rai``: the ``otel-rai`` command."""

import sys

from otel_rai.cli import main

sys.exit(main())
