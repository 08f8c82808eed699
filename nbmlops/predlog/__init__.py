"""The prediction log: every record scored, rejected or failed, in SQLite or PostgreSQL."""
