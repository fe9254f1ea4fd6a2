"""Authentication flows that run while the bridge talks to the remote, as `httpx2.Auth` flows.

- `headers.py`: credentials that rotate (a user JWT in a file, a secret manager's command);
- `oauth.py`: OAuth 2.1 for remotes that require the MCP authorization flow, on the SDK's client
  provider, with `token_store.py` (tokens per remote, shared safely by several copies) and
  `browser.py` (the system browser and the loopback callback). Imported only when OAuth is in play:
  it loads the MCP SDK, which API-key users never pay for.
"""
