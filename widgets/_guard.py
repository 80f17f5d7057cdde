"""Callback plumbing shared by the panels: user-facing errors shown as a message, anything else
captured into the panel's Output area instead of vanishing."""

from __future__ import annotations

import functools
import html

from vsm_kit.errors import VsmKitError


def guarded(method):
    """Wrap a panel method: `VsmKitError` → `self.status` shows it; other errors → `self.output`."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.output:
            try:
                result = method(self, *args, **kwargs)
            except VsmKitError as err:
                self.show_error(str(err))
                return None
        return result

    return wrapper


def error_html(message: str) -> str:
    return f"<pre style='color:#b00020;white-space:pre-wrap'>{html.escape(message)}</pre>"
