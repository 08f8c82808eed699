"""The artifact: its files, schema, profile, lineage and card; checks and frames from its schema."""
