from .guidance import APG_DEFAULTS, GUIDANCE, ZERO_INIT_STEPS, APGSettings, apg, cfg, cfg_zero_star, optimized_scale
from .loop import StepCallback, StepControl, StepState, integrate, sample, stop_when, timesteps
from .schedule import Grid, shift_time, start_index, time_grid
from .solvers import SOLVERS, euler_step, heun_step

__all__ = ["APG_DEFAULTS", "APGSettings", "GUIDANCE", "Grid", "SOLVERS", "StepCallback", "StepControl", "StepState",
           "ZERO_INIT_STEPS", "apg", "cfg", "cfg_zero_star", "euler_step", "heun_step", "integrate", "optimized_scale",
           "sample", "shift_time", "start_index", "stop_when", "time_grid", "timesteps"]
