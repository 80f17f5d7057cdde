"""The embedded demo world (data tree in the real formats; later also tiny weights)."""

from .world import DemoWorld, ensure_demo_world, make_demo_world

__all__ = ["DemoWorld", "ensure_demo_world", "make_demo_world"]
