"""The benchmark: what the bridge costs over talking to the remote directly, side by side with peers."""
