"""Tools around the product, never imported by a worker: the demo launcher and embedded servers,
the generator, replay and conversion of real logs, and the benchmarks."""
