"""callpark.dr: pools, the failover controller, drains and drills."""
