"""Configuration: the typed, frozen settings (settings) and the parsers of their values (values)."""
