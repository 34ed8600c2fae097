"""Test support shipped with unioncard: Hypothesis strategies for APDUs and
BER-TLV (`strategies`) and for trace records and damaged traces
(`trace_strategies`), for this project's suite and for integrators' own tests.
Importing it requires ``hypothesis``."""
