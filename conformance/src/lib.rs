//! CRI conformance suite (filled by the harness work)
