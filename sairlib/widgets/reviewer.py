"""Human review of trajectories, one at a time: accept, or reject with a reason.

    from sairlib.widgets import TrajectoryReviewer
    reviewer = TrajectoryReviewer(trajectories, "outputs/run/01_pipeline/reviews.jsonl")
    reviewer.widget

Each decision is appended at once to the JSON Lines file with :func:`sairlib.review.append_review`
(fsynced: closing the notebook loses nothing). A reviewer opened again on the same file shows the
earlier decisions and starts at the first trajectory not yet reviewed; the last decision for an id
wins, so changing one's mind is just deciding again. The SFT set is then built from
``apply_reviews(trajectories, load_reviews(path))``.

Keyboard use in JupyterLab (no extension needed; tested in a real browser by tests/test_browser.py):

- **Tab / Shift+Tab** move the focus: previous, next, reason box, accept, reject, key box;
  **Enter** or **Space** presses the focused button (each has a tooltip saying what it does).
- The **key box** takes one-letter commands as you type them: ``a`` accept, ``r`` reject (with
  the text of the reason box), ``n`` next, ``p`` previous. It clears itself after each command, so
  click it once and review with single keys. To reject: click (or Shift+Tab to) the reason box,
  type the reason, then Tab twice to "reject" and press Enter (or Tab three times back to the
  key box and press ``r``). JupyterLab's notebook shortcuts do not fire while a box has focus.

A rejection without a reason is refused: nothing is written and the message line says why.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ipywidgets as W

from ..review import append_review, load_reviews
from .explorer import as_trajectories
from .render_html import esc, trajectories_html

KEYS: dict[str, str] = {"a": "accept", "r": "reject", "n": "next", "p": "previous"}


class TrajectoryReviewer:
    """Step through trajectories; record accept / reject-with-reason decisions in ``path``."""

    def __init__(self, trajectories: Any, path: str | os.PathLike, image_size: int = 128,
                 start: int | None = None) -> None:
        self.trajectories = as_trajectories(trajectories)
        if not self.trajectories:
            raise ValueError("trajectories: nothing to review")
        ids = [t.id for t in self.trajectories]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"trajectories: id {dup!r} appears more than once")
        self.path = Path(path)
        self.image_size = image_size
        self.reviews: dict[str, dict[str, Any]] = load_reviews(self.path)
        if start is None:
            start = next((i for i, t in enumerate(self.trajectories) if t.id not in self.reviews), 0)
        if not isinstance(start, int) or not 0 <= start < len(self.trajectories):
            raise ValueError(f"start: must be an index in 0..{len(self.trajectories) - 1}, got {start!r}")
        self.index = start

        self.reason = W.Text(placeholder="reason (needed to reject)", description="reason",
                             layout=W.Layout(width="420px"), continuous_update=False)  # synced on Tab/Enter/blur
        self.accept_button = W.Button(description="accept", button_style="success", icon="check",
                                      tooltip="accept this trajectory and go to the next one (key a)")
        self.reject_button = W.Button(description="reject", button_style="danger", icon="times",
                                      tooltip="reject this trajectory with the reason typed in the box (key r)")
        self.prev_button = W.Button(description="previous", icon="arrow-left",
                                    tooltip="go to the previous trajectory without deciding (key p)")
        self.next_button = W.Button(description="next", icon="arrow-right",
                                    tooltip="go to the next trajectory without deciding (key n)")
        self.keys = W.Text(placeholder="keys: a accept · r reject · n next · p previous", description="keys",
                           layout=W.Layout(width="300px"), continuous_update=True)
        for name in ("reason", "accept_button", "reject_button", "prev_button", "next_button", "keys"):
            getattr(self, name).add_class(f"sair-review-{name.replace('_button', '')}")
        self.message = W.HTML()
        self.message.add_class("sair-review-message")
        self.position = W.HTML()
        self.view = W.HTML()
        self.view.add_class("sair-view")
        self.accept_button.on_click(lambda _: self.accept())
        self.reject_button.on_click(lambda _: self.reject())
        self.prev_button.on_click(lambda _: self.go(self.index - 1))
        self.next_button.on_click(lambda _: self.go(self.index + 1))
        self.keys.observe(self._on_key, names="value")
        self.widget = W.VBox([
            W.HBox([self.prev_button, self.next_button, self.position]),
            self.view,
            W.HBox([self.reason, self.accept_button, self.reject_button]),
            W.HBox([self.keys, self.message]),
        ])
        self.widget.add_class("sair-reviewer")
        self._draw()

    # ------------------------------------------------------------ state
    @property
    def current(self) -> Any:
        return self.trajectories[self.index]

    def decision(self, traj_id: str | None = None) -> dict[str, Any] | None:
        """The latest decision for ``traj_id`` (default: the current trajectory), or None."""
        return self.reviews.get(traj_id if traj_id is not None else self.current.id)

    def counts(self) -> dict[str, int]:
        """How many trajectories are accepted, rejected and not yet reviewed."""
        ids = {t.id for t in self.trajectories}
        dec = [r["decision"] for i, r in self.reviews.items() if i in ids]
        return {"accept": dec.count("accept"), "reject": dec.count("reject"), "unreviewed": len(ids) - len(dec)}

    # ------------------------------------------------------------ actions
    def go(self, index: int) -> None:
        """Show trajectory ``index`` (clamped), clearing the reason box and the message."""
        self.index = min(max(0, index), len(self.trajectories) - 1)
        self.reason.value = ""
        self.message.value = ""
        self._draw()

    def accept(self) -> None:
        """Record "accept" (with the reason box's text as a note, if any) and move on."""
        self._decide("accept", self.reason.value.strip())

    def reject(self) -> None:
        """Record "reject" with the reason box's text; refused, with a message, when it is empty."""
        reason = self.reason.value.strip()
        if not reason:
            self.message.value = ('<span style="color:#cf222e;font-weight:600">A rejection needs a reason: '
                                  'type it in the reason box, then press reject.</span>')
            return
        self._decide("reject", reason)

    def _decide(self, decision: str, reason: str) -> None:
        t = self.current
        self.reviews[t.id] = append_review(self.path, t.id, decision, reason)
        last = self.index == len(self.trajectories) - 1
        self.go(self.index + 1)
        self.message.value = f"{esc(decision)}ed {esc(t.id)}" + (" · that was the last one" if last else "")

    def _on_key(self, change: dict[str, Any]) -> None:
        typed = (change["new"] or "").strip().lower()
        if not typed:
            return
        self.keys.value = ""  # fires this observer again with "", ignored above
        command = KEYS.get(typed[-1])
        if command == "accept":
            self.accept()
        elif command == "reject":
            self.reject()
        elif command == "next":
            self.go(self.index + 1)
        elif command == "previous":
            self.go(self.index - 1)
        else:
            self.message.value = f"unknown key {esc(typed[-1])!s}: use a, r, n or p"

    # ------------------------------------------------------------ view
    def _draw(self) -> None:
        t = self.current
        c = self.counts()
        self.position.value = (f"trajectory {self.index + 1} / {len(self.trajectories)} · "
                               f"{c['accept']} accepted, {c['reject']} rejected, {c['unreviewed']} to review · "
                               f"decisions in <code>{esc(self.path)}</code>")
        self.view.value = trajectories_html([t], self.image_size, self.reviews)
        self.prev_button.disabled = self.index == 0
        self.next_button.disabled = self.index == len(self.trajectories) - 1

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
