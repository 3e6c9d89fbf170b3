"""Live notebook widgets for runs (ipywidgets + anywidget), with plain-text fallbacks."""

from ._dashboard import RunDashboard, widgets_available
from ._state import RunState, Series

__all__ = ["RunDashboard", "RunState", "Series", "widgets_available"]
