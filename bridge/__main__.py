"""`python -m bridge` runs the bridge, exactly like the `alloy-mcp-bridge` command."""

from bridge.cli import main

raise SystemExit(main())
