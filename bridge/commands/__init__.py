"""The bridge's commands: `run` (the default), `check`, `demo`; each in its own module."""
