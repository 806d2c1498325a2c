"""The ``craft`` subcommands this package adds (entry-point group ``craft_bench.commands``): module and help."""

PERF = ("measurement.perf", "measure query throughput: official-style path versus fast path")
