"""CLI command groups, one module per area (see duelguard.cli)."""
