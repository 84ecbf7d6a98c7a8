"""``python -m callpark.lab.phone``: the softphone process (see :mod:`callpark.lab.phone.protocol`)."""

import sys

from callpark.lab.phone.child import main

if __name__ == "__main__":
    sys.exit(main())
