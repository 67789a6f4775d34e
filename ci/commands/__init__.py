"""One module per CLI command (as pre-commit does); each returns data or an exit code."""
