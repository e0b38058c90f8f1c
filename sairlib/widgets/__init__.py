"""Notebook widgets for trajectories: an explorer, a reviewer and a static (offline) view.

    from sairlib.widgets import TrajectoryExplorer, TrajectoryReviewer, static_view
    TrajectoryExplorer(trajectories, page_size=5).widget        # filter and page (live)
    static_view(trajectories, n=6)                               # the same cards as plain HTML
    TrajectoryReviewer(trajectories, run_dir / "01_pipeline" / "reviews.jsonl").widget

``trajectories`` is a list of :class:`sairlib.trajectory.Trajectory` or a trajectory HF dataset
(``datasets.load_from_disk(run_dir / "01_pipeline" / "dataset")``). The widget logic runs
without a kernel, so tests set filter values and click buttons in plain Python.
"""
from .explorer import TrajectoryExplorer, as_trajectories
from .render_html import image_data_url, trajectories_html, trajectory_html
from .reviewer import TrajectoryReviewer
from .static import static_html, static_view, write_static_html

__all__ = ["TrajectoryExplorer", "TrajectoryReviewer", "as_trajectories", "image_data_url", "static_html",
           "static_view", "trajectories_html", "trajectory_html", "write_static_html"]
