"""OpenGridGym: multi-agent RL environments for distribution electricity markets."""

__version__ = "0.1.0"
