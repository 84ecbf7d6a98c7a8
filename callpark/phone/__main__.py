"""``python -m callpark.phone``: the softphone process (see :mod:`callpark.phone.protocol`)."""

import sys

from callpark.phone.child import main

if __name__ == "__main__":
    sys.exit(main())
