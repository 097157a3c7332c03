"""Parameters, paths, atomic I/O, errors and run context: what every other package builds on."""
