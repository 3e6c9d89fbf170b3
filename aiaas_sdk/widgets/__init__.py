"""Live notebook widgets for runs and deployments (ipywidgets + anywidget), with plain-text fallbacks."""

from ._dashboard import RunDashboard, widgets_available
from ._deployment_state import DeploymentState
from ._deployment_view import DeploymentView
from ._state import RunState, Series

__all__ = ["DeploymentState", "DeploymentView", "RunDashboard", "RunState", "Series", "widgets_available"]
