"""hyperlt: controllable long-tailed recognition with hypernetwork-generated experts."""

__version__ = "0.1.0"
