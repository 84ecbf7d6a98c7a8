"""The storage boundary: the only etcd-aware code and the only importer of the etcd client."""
