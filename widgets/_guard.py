"""What the panels share: they display as their `widget`; callbacks show user-facing errors as
one line and internal errors with their traceback in the panel's Output area, so neither
vanishes (a button callback's exception would otherwise only reach the kernel's log)."""

from __future__ import annotations

import functools
import html
import traceback

from IPython.display import display

from vsm_kit.errors import VsmKitError


class Panel:
    """Base of the panels: shown as `self.widget`; `show_error` writes to `self.status`."""

    def _ipython_display_(self):
        display(self.widget)

    def show_error(self, message: str) -> None:
        self.status.value = error_html(message)


def guarded(method):
    """Wrap a panel method. A `VsmKitError` → one line in `self.status` and `self.output`, the
    call returns None. Anything else is a bug: its traceback goes to `self.output` and it is
    raised again. `Output.__exit__` is not given the exception: under IPython it would swallow
    it and the call would return nothing."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.output:  # what the method prints lands in the panel
            try:
                return method(self, *args, **kwargs)
            except Exception as err:  # handled below, outside the `with`
                error = err
        if isinstance(error, VsmKitError):
            self.show_error(str(error))
            self.output.append_stderr(f"error: {error}\n")
            return None
        self.show_error(f"internal error ({type(error).__name__}: {error}); traceback below")
        self.output.append_stderr("".join(traceback.format_exception(error)))
        raise error

    return wrapper


def error_html(message: str) -> str:
    return f"<pre style='color:#b00020;white-space:pre-wrap'>{html.escape(message)}</pre>"
