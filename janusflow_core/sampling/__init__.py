from .guidance import cfg
from .loop import StepState, integrate, timesteps
from .solvers import SOLVERS, euler_step, heun_step

__all__ = ["SOLVERS", "StepState", "cfg", "euler_step", "heun_step", "integrate", "timesteps"]
