"""Test support shipped with unioncard, for this project's suite and for integrators' own tests.

- `purse_checks`: the purse conformance checks, run through the terminal engine against
  any card and PSAM: the simulator in process, or your own cards over PC/SC
  (docs/simulator.md, "Conformance checks"); it needs neither pytest nor Hypothesis.
- `purse_rig`: the rig the checks drive (`PurseRig`: card and PSAM links, keystore,
  journal, clock), the tampered links, and the step helpers card tests share
  (`prepare_debit`, `prepare_credit`, `select_application`, `expected_tac`); it needs
  neither pytest nor Hypothesis.
- `strategies`, `record_strategies`, `trace_strategies`: Hypothesis strategies for APDUs
  and BER-TLV, for offline records, and for trace records and damaged traces; importing
  them requires ``hypothesis``.
"""
