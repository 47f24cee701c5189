"""The application layer: the `conveyor` CLI and the local stack launcher.

Imports run down only: app -> flows -> tasks -> conveyor (the core); nothing below imports app.
"""
