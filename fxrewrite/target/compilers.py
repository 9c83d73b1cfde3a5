"""The vendor compilers a target may be judged by, and the accelerators each compiles for: known
without the compiler installed, so that a target file naming another is refused on load. Each is
implemented behind one interface in fxrewrite.ship.compilers (tests/test_registries.py holds the
two in step).

A target names its compiler in its file: `compiler = "vela"` and `accelerator = "ethos-u55-128"`
under [target]; `vela_accelerator = "ethos-u55-128"`, the older spelling, means the same.
"""

#: compiler name -> the accelerators it compiles for. Vela's are its `Accelerator` enum
#: (tests/test_hardening.py checks the two agree where the ethos-u extra is installed)
ACCELERATORS: dict[str, tuple[str, ...]] = {
    "vela": ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512",
             "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048"),
}
