"""Progress, cancel and messages between the engine and its caller (a QGIS algorithm, a script, a test)."""


class Canceled(RuntimeError):
    """The caller asked to stop; whatever was being written has been removed."""


class Feedback:
    """No-op feedback for scripts. The QGIS algorithms pass an adapter around ``QgsProcessingFeedback``."""

    def progress(self, fraction):
        """Report progress as a fraction 0–1."""

    def canceled(self):
        return False

    def info(self, text):
        """An informational message."""

    def warning(self, text):
        """A warning the user should see."""

    def check_canceled(self):
        """Raise Canceled if the caller asked to stop."""
        if self.canceled():
            raise Canceled("Canceled by the user; no output was written.")
