"""One module per command: a ``Config`` dataclass, ``DEFAULT_CONFIG`` (a built-in config name or None),
``output_folder(cfg)`` (what the command writes, checked and locked by the CLI) and ``run(cfg)``.

Jobs assemble the library (pool, merging, realign, affinity, training, report); no job imports another.
"""
