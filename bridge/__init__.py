"""alloy-mcp-bridge: a stdio MCP server that relays to a remote Streamable HTTP MCP server."""

__version__ = "0.1.0"
