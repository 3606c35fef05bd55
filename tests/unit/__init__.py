"""In-process tests: no services, milliseconds to seconds."""
