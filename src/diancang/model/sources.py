"""Built-in short encoder names (filled in by the encoders issue; none are bundled yet)."""
