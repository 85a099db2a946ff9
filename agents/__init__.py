"""RL side of neuralsim (installed as ``neuralsim.agents``): SB3/RLlib adapters and the transfer benchmark."""
