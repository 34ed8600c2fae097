"""Test support shipped with unioncard: Hypothesis strategies for APDUs and
BER-TLV, for this project's suite and for integrators' own tests.
Importing it requires ``hypothesis``."""
