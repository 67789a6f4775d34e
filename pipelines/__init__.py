"""Pipeline definitions users read and copy; each is built from the `ci` library."""
