from .guidance import cfg
from .loop import StepCallback, StepControl, StepState, integrate, sample, stop_when, timesteps
from .solvers import SOLVERS, euler_step, heun_step

__all__ = ["SOLVERS", "StepCallback", "StepControl", "StepState", "cfg", "euler_step", "heun_step", "integrate",
           "sample", "stop_when", "timesteps"]
