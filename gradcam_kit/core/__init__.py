"""The engine and what it stands on: class scores, target layers, upsampling and hooks.

Nothing here knows about a dataset, a file or a command.
"""
