"""Clustered BLF StateStore: the pure domain core (`statestore.domain`) and its adapters."""
