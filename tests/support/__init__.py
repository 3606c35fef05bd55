"""Helpers the tests share: the real stack (``stack``), fakes for in-process tests (``fakes``),
certificates and metrics scraping (``ops``)."""
