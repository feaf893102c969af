"""Clustered BLF StateStore, in layers (README.md here): the pure domain core
(`statestore.domain`), the record layout (`keys`, `codec`, `records`, `stored`), the seam
(`statestore.store`), its adapters (`statestore.etcd`, `statestore.memory`), derived state
(`mirror`), operations (`maintenance`, `orphans`, `presence_admin`, `lab`) and the CLI
(`cli`, `cli_presence`)."""
