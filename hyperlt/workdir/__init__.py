"""The work dir of a run: orbax checkpoints (checkpoint), the Run record with its facts and load (run), and
the write lock of a training (lock)."""
