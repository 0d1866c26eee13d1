"""What only tests, benchmarks and the demo need: tiny random-weight models and a simulated fleet.

The daemon and the coordinator never import this package (tests/test_layering.py keeps it so)."""
