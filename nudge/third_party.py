"""Third-party warnings nobody running nudge can act on, silenced by exact origin.

Importing Feast runs ``warnings.simplefilter("once", DeprecationWarning)``, which shows every
deprecation raised anywhere in the process; the ones below come from one dependency calling
another. Used by the server and by training alike, so it belongs to neither.
"""

from __future__ import annotations

import warnings

# (message regex, module regex of the code that triggers it): DeprecationWarnings raised by one
# third-party package calling another, which nobody running nudge can act on.
KNOWN_WARNINGS: tuple[tuple[str, str], ...] = (
    # skl2onnx puts a bool in an int attribute: the reason protobuf is pinned <7 (DEVELOPERS.md).
    (r"Field onnx\.AttributeProto\.ints: Expected an int, got a boolean", r"onnx\.helper"),
)


def quiet_known_warnings() -> None:
    """Ignore the ``KNOWN_WARNINGS``, and nothing else.

    Importing Feast runs ``warnings.simplefilter("once", DeprecationWarning)``, which goes
    ahead of every earlier filter (``-W``/PYTHONWARNINGS included) and shows each deprecation
    raised anywhere in the process. So Feast is imported first (already loaded wherever this
    is called), then these filters go ahead of Feast's; Feast's own deprecations still show."""
    import feast  # noqa: F401

    for message, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=DeprecationWarning, module=module)
