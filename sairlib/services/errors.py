"""Typed failures of external services, so the pipeline can record them on the sample.

- :class:`ServiceError`: an HTTP call failed for good (a non-retryable status, or every bounded
  retry used up on timeouts, 429s or 5xx). ``kind`` is ``"timeout"``, ``"http_429"``,
  ``"http_500"``, ``"transport"``, ``"bad_response"``...; ``attempts`` how many were made.
- :class:`JudgeError`: the judge answered, but not with a usable JSON answer, even after one
  repair request. The sample is marked as a judge error; no score is ever guessed.

Messages never carry credentials: they name the endpoint path, the status and a short excerpt
of the server's answer.
"""
from __future__ import annotations


class ServiceError(RuntimeError):
    """An external call that failed after its bounded retries (or at once, when not retryable)."""

    def __init__(self, what: str, kind: str, attempts: int, detail: str = "") -> None:
        self.what, self.kind, self.attempts, self.detail = what, kind, attempts, detail
        super().__init__(f"{what}: {kind} after {attempts} attempt(s)" + (f": {detail}" if detail else ""))


class JudgeError(RuntimeError):
    """The judge's answer could not be parsed strictly, even after one repair request."""

    def __init__(self, method: str, problem: str, answer: str = "") -> None:
        self.method, self.problem, self.answer = method, problem, answer[:300]
        super().__init__(f"judge error in {method}: {problem}" + (f" (answer: {self.answer!r})" if answer else ""))
