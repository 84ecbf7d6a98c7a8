"""``python -m callpark.node.worker``: started by the supervisor, never by hand."""

from callpark.node.worker.main import main

raise SystemExit(main())
