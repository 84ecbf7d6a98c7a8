"""callpark.node: the park node (supervisor and pjsua2 workers)."""
