"""The io floor: checkpoints (safetensors + sidecar), atomic writes, the restricted unpickler, output
locks, output-folder checks and provenance. Nothing here imports another simo_merge layer; whether this
process may publish a file (rank 0 under several processes) is decided by the caller."""
