"""Everything that exists to run a cluster on one machine: local etcd, local cluster, drill, demo, softphone."""
