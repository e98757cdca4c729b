"""`python -m app --model PATH [--compare-model PATH] [--host H] [--port P] [--share]`."""

import sys

from app.main import main

if __name__ == "__main__":
    sys.exit(main())
