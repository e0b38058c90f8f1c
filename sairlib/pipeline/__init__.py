"""The data pipeline (Analyzer ⇋ Generator): X2I tasks in, trajectories of the three modes out.

    from sairlib.pipeline import Backends, EscalationConfig, PolicyGenerator, WorldGenerator
    from sairlib.pipeline import build_trajectories, summarise_trajectories
    b = Backends(WorldAnalyzer(), direct=PolicyGenerator(policy), redraw=PolicyGenerator(policy),
                 config=EscalationConfig(max_rounds=3))
    ts = build_trajectories(tasks, b, "outputs/run/01_pipeline", seed=0)
    summarise_trajectories(ts)["mode_share_by_complexity"]
"""
from .batching import Batcher
from .build import build_trajectories, build_trajectories_parallel
from .escalation import Backends, BackendError, EscalationConfig, escalate, request_seed
from .generators import DrawRequest, PolicyGenerator, WorldGenerator, make_generator
from .spec import BackendSpec, check_pipeline
from .store import TrajectoryStore
from .summary import summarise_trajectories

__all__ = ["Batcher", "BackendSpec", "build_trajectories", "build_trajectories_parallel", "Backends", "BackendError", "EscalationConfig", "escalate",
           "request_seed", "DrawRequest", "PolicyGenerator", "WorldGenerator", "make_generator", "TrajectoryStore",
           "summarise_trajectories", "check_pipeline"]
