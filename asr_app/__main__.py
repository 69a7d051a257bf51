"""`python -m asr_app`: the `asr-app` command line."""

import sys

from asr_app.cli import main

sys.exit(main())
