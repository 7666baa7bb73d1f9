"""Test helper: a simulated series and its parameter file as a dict."""

from pathlib import Path

from holodask import simulate
from holodask.params import parse_parameter_text


def simulated_params(folder: Path, defaults: dict, **kwargs):
    """Simulate into ``folder`` (``defaults`` overridden by ``kwargs``); return the
    series and its parameters, with ``path`` set so they can be written anywhere."""
    series = simulate.simulate_series(folder, **{**defaults, **kwargs})
    params = parse_parameter_text(Path(series.params_path).read_text())
    params["path"] = str(folder)
    return series, params
