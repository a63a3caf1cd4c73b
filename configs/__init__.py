"""Pipeline configuration: the pydantic schema, shared constants and the shipped YAML files."""
