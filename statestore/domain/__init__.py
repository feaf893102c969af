"""Rules of the domain. Nothing here imports KSR, an etcd client, threads or the clock."""
