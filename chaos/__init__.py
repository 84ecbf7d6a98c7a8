"""callpark.chaos: fault injectors, workloads, history and the invariant checker."""
