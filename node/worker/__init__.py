"""callpark.node.worker: one pjsua2 endpoint holding at most four calls for a supervisor."""
