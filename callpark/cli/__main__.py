"""``python -m callpark.cli``."""

from callpark.cli.app import main

if __name__ == "__main__":
    raise SystemExit(main())
