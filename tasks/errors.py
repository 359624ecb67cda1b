"""Errors a pipeline step raises when it must stop the run with a message for the user."""


class PipelineStepError(Exception):
    """A step refused to go on; the message says what is wrong and how to fix it."""


class DataValidationError(PipelineStepError):
    """The dataset broke one or more intake rules; ``report_path`` holds the full GX result."""

    def __init__(self, message: str, report_path=None, violations=()):
        super().__init__(message)
        self.report_path = report_path
        self.violations = list(violations)
