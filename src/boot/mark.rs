//! Marking slots good, bad or active: RAUC's semantics over any backend.
