"""Measuring: what the two approaches do under load, real and simulated.

``scenario/`` simulates traffic through Lambda and a server fleet (calibrated on this machine);
``replay`` sends the same arrivals for real to the elastic emulator and ``local serve`` and checks
the simulation against them. (The redesign of issue 15 moves bench, tune, soak, monitor and cost
here as well.)
"""
