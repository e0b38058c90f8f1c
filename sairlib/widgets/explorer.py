"""Trajectory explorer: filter trajectories and page through them, images and texts interleaved.

In a notebook::

    from sairlib.widgets import TrajectoryExplorer, static_view
    explorer = TrajectoryExplorer(trajectories, page_size=5)   # Trajectory list or an HF dataset
    explorer.widget                                             # display the ipywidgets container
    static_view(trajectories, n=6)                              # next cell: the same cards as plain
                                                                # HTML, for the exported page read offline

Filters: mode, complexity range, family, category, outcome (passed / failed) and status (kept /
discarded / error); "(any)" leaves a filter open. The same filters from code (and in tests)::

    explorer.set_filters(mode="multistep", complexity=(2, 5), outcome="passed")
    explorer.shown_ids()        # ids on the current page, in order
    explorer.next_button.click()

Every text is HTML-escaped (see :mod:`sairlib.widgets.render_html`); the widget's DOM carries
``class="sair-explorer"`` and one ``data-trajectory-id`` element per trajectory shown.
"""
from __future__ import annotations

from typing import Any, Sequence

import ipywidgets as W

from ..modes import MODES
from ..trajectory import STATUSES, Trajectory, from_dataset
from .render_html import esc, trajectories_html

ANY = "(any)"
OUTCOMES: tuple[str, ...] = ("passed", "failed")
FILTERS: tuple[str, ...] = ("mode", "complexity", "family", "category", "outcome", "status")


def as_trajectories(items: Any) -> list[Trajectory]:
    """A list of trajectories from a sequence of them or from a trajectory HF dataset."""
    if hasattr(items, "features") and hasattr(items, "column_names"):
        return from_dataset(items)
    out = list(items)
    for i, t in enumerate(out):
        if not isinstance(t, Trajectory):
            raise ValueError(f"trajectories[{i}]: expected a sairlib.trajectory.Trajectory, got {type(t).__name__}")
    return out


def _options(values: Sequence[str]) -> list[str]:
    return [ANY] + sorted({v for v in values if v})


class TrajectoryExplorer:
    """Filterable, paged view of trajectories (see the module docstring)."""

    def __init__(self, trajectories: Any, page_size: int = 5, image_size: int = 96) -> None:
        if not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"page_size: must be a positive integer, got {page_size!r}")
        self.trajectories = as_trajectories(trajectories)
        self.page_size = page_size
        self.image_size = image_size
        self.page = 0
        ts = self.trajectories
        cx = [t.complexity for t in ts] or [0]
        lo, hi = min(cx), max(cx)
        modes = [m for m in MODES if any(t.mode == m for t in ts)] + sorted({t.mode for t in ts if t.mode} - set(MODES))
        style = {"description_width": "initial"}
        self.mode = W.Dropdown(options=[ANY] + modes, value=ANY, description="mode", style=style,
                               tooltip="show one mode only")
        self.complexity = W.IntRangeSlider(value=(lo, hi), min=lo, max=max(hi, lo + 1) if hi == lo else hi,
                                           description="complexity", style=style, continuous_update=False)
        self.family = W.Dropdown(options=_options([str(t.meta.get("family", "")) for t in ts]), value=ANY,
                                 description="family", style=style)
        self.category = W.Dropdown(options=self._categories(ANY), value=ANY, description="category", style=style)
        self.outcome = W.Dropdown(options=[ANY, *OUTCOMES], value=ANY, description="outcome", style=style)
        self.status = W.Dropdown(options=[ANY] + [s for s in STATUSES], value=ANY, description="status", style=style)
        for name in FILTERS:
            getattr(self, name).add_class(f"sair-filter-{name}")
        self.prev_button = W.Button(description="◀ previous", tooltip="previous page", layout=W.Layout(width="110px"))
        self.next_button = W.Button(description="next ▶", tooltip="next page", layout=W.Layout(width="110px"))
        self.prev_button.add_class("sair-prev")
        self.next_button.add_class("sair-next")
        self.summary = W.HTML()
        self.summary.add_class("sair-summary")
        self.view = W.HTML()
        self.view.add_class("sair-view")
        self.prev_button.on_click(lambda _: self.go(self.page - 1))
        self.next_button.on_click(lambda _: self.go(self.page + 1))
        self.family.observe(self._on_family, names="value")
        for name in FILTERS:
            getattr(self, name).observe(self._on_filter, names="value")
        self._matching: list[Trajectory] = []
        self._quiet = False
        filters = W.VBox([W.HBox([self.mode, self.family, self.category]),
                          W.HBox([self.complexity, self.outcome, self.status])])
        self.widget = W.VBox([filters, W.HBox([self.prev_button, self.next_button, self.summary]), self.view])
        self.widget.add_class("sair-explorer")
        self.refresh()

    # ------------------------------------------------------------ filtering
    def _categories(self, family: str) -> list[str]:
        return _options([str(t.meta.get("category", "")) for t in self.trajectories
                         if family == ANY or str(t.meta.get("family", "")) == family])

    def _on_family(self, change: dict[str, Any]) -> None:
        opts = self._categories(change["new"])
        self._quiet = True  # one refresh for the family change, not one per option change
        try:
            keep = self.category.value if self.category.value in opts else ANY
            self.category.options = opts
            self.category.value = keep
        finally:
            self._quiet = False

    def _on_filter(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self.page = 0
            self.refresh()

    def matches(self, t: Trajectory) -> bool:
        """Does ``t`` pass every filter as currently set?"""
        lo, hi = self.complexity.value
        return ((self.mode.value == ANY or t.mode == self.mode.value)
                and lo <= t.complexity <= hi
                and (self.family.value == ANY or str(t.meta.get("family", "")) == self.family.value)
                and (self.category.value == ANY or str(t.meta.get("category", "")) == self.category.value)
                and (self.outcome.value == ANY or (t.passed == (self.outcome.value == "passed")))
                and (self.status.value == ANY or t.status == self.status.value))

    def set_filters(self, **values: Any) -> None:
        """Set filters by name (``mode``, ``complexity`` as (lo, hi), ``family``, ``category``,
        ``outcome``, ``status``); ``None`` or "(any)" opens a filter. Unknown names or values are errors."""
        for name, v in values.items():
            if name not in FILTERS:
                raise ValueError(f"filter: unknown {name!r} (known: {', '.join(FILTERS)})")
            w = getattr(self, name)
            if name == "complexity":
                lo, hi = (w.min, w.max) if v is None else v
                w.value = (max(w.min, int(lo)), min(w.max, int(hi)))
                continue
            v = ANY if v is None else v
            if v not in w.options:
                raise ValueError(f"{name}: {v!r} is not among {list(w.options)}")
            w.value = v

    def reset(self) -> None:
        """Open every filter and go to the first page."""
        self.set_filters(**{k: None for k in FILTERS})

    # ------------------------------------------------------------ paging and views
    @property
    def n_pages(self) -> int:
        return max(1, -(-len(self._matching) // self.page_size))

    def go(self, page: int) -> None:
        """Show page ``page`` (clamped to the pages there are)."""
        self.page = min(max(0, page), self.n_pages - 1)
        self._draw()

    def matching(self) -> list[Trajectory]:
        """All trajectories passing the filters, in input order."""
        return list(self._matching)

    def shown(self) -> list[Trajectory]:
        """The trajectories on the current page."""
        start = self.page * self.page_size
        return self._matching[start:start + self.page_size]

    def shown_ids(self) -> list[str]:
        return [t.id for t in self.shown()]

    def refresh(self) -> None:
        """Re-apply the filters (e.g. after changing ``trajectories``) and redraw."""
        self._matching = [t for t in self.trajectories if self.matches(t)]
        self.go(self.page)

    def _draw(self) -> None:
        shown = self.shown()
        first = self.page * self.page_size + 1 if shown else 0
        self.summary.value = (f"{esc(len(self._matching))} of {esc(len(self.trajectories))} trajectories match · "
                              f"showing {esc(first)}–{esc(first + len(shown) - 1 if shown else 0)} · "
                              f"page {esc(self.page + 1)} / {esc(self.n_pages)}")
        self.prev_button.disabled = self.page == 0
        self.next_button.disabled = self.page >= self.n_pages - 1
        self.view.value = trajectories_html(shown, self.image_size)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
