"""AICraft gateway: a real-time gateway for fleets of AI-driven Minecraft bots."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
